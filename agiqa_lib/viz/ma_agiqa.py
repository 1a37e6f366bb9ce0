"""Figures and tables of notebook 04 (MA-AGIQA training): curves, results, gates, scatter."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from torch import nn

from agiqa_lib.ma_agiqa.config import TrainConfig
from agiqa_lib.ma_agiqa.study import StudyResult
from agiqa_lib.viz.exploration import save_figure

__all__ = ["save_figure", "parameter_table", "plot_lr_schedule", "plot_training_curves",
           "results_table", "plot_gate_weights", "plot_pred_vs_mos"]


def parameter_table(model: nn.Module) -> pd.DataFrame:
    """Parameters per top-level part of an MA-AGIQA model (trainable or frozen)."""
    rows = []
    for name, part in [("backbone", model.backbone), *model.maniqa.named_children(),
                       ("fusion", model.fusion)]:
        if part is None:
            continue
        params = list(part.parameters())
        rows.append({"part": name if name == "backbone" or name == "fusion"
                     else f"maniqa.{name}",
                     "parameters": sum(p.numel() for p in params),
                     "trainable": any(p.requires_grad for p in params)})
    table = pd.DataFrame(rows)
    total = pd.DataFrame([{"part": "total", "parameters": table["parameters"].sum(),
                           "trainable": table["trainable"].any()}])
    return pd.concat([table, total], ignore_index=True)


def plot_lr_schedule(cfg: TrainConfig, iters_per_epoch: int, epochs: int = 2) -> plt.Figure:
    """Learning rate per iteration: the released cosine, stepped every iteration (T_max=50)."""
    it = np.arange(iters_per_epoch * epochs)
    lr = cfg.eta_min + (cfg.lr - cfg.eta_min) * (1 + np.cos(math.pi * it / cfg.t_max)) / 2
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(it, lr)
    for e in range(1, epochs):
        ax.axvline(e * iters_per_epoch, color="grey", ls=":", lw=1)
    ax.set(xlabel="iteration", ylabel="learning rate",
           title=f"CosineAnnealingLR(T_max={cfg.t_max}) stepped every iteration "
                 f"({iters_per_epoch} iterations per epoch)")
    return fig


def plot_training_curves(study: StudyResult) -> plt.Figure:
    """Train loss and val SRCC per epoch, one line per variant (first seed); dots = chosen epoch."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8))
    seed = study.runs[0].seed
    for run in (r for r in study.runs if r.seed == seed):
        h = run.history
        line, = ax_loss.plot(h["epoch"], h["train_loss"], marker=".", label=run.variant)
        ax_val.plot(h["epoch"], h["val_srcc"], marker=".", color=line.get_color())
        best = h[h["epoch"] == run.best_epoch]
        ax_val.scatter(best["epoch"], best["val_srcc"], s=80, color=line.get_color(),
                       edgecolor="black", zorder=3)
    ax_loss.set(xlabel="epoch", ylabel="train MSE", yscale="log", title="training loss")
    ax_val.set(xlabel="epoch", ylabel="val SRCC", title="validation (big dot: selected epoch)")
    ax_loss.legend(fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def results_table(table: pd.DataFrame) -> pd.DataFrame:
    """Test metrics per variant, all-test and as-released evaluation side by side (mean over seeds)."""
    cols = ["srcc", "plcc_logistic", "krcc", "rmse_logistic", "within_generator_srcc", "n"]
    mean = table.groupby(["variant", "evaluation"], sort=False)[cols].mean()
    wide = mean.unstack("evaluation")
    wide.columns = [f"{metric} ({evaluation})" for metric, evaluation in wide.columns]
    order = [c for m in cols for c in wide.columns if c.startswith(f"{m} (")]
    return wide[order].round(4)


def plot_gate_weights(predictions: pd.DataFrame, title: str = "") -> plt.Figure:
    """Gate weight of each expert per test image, grouped by generator."""
    gates = [c for c in predictions if c.startswith("gate_")]
    long = predictions.melt(id_vars=["generator"], value_vars=gates, var_name="expert",
                            value_name="gate weight")
    long["expert"] = long["expert"].str.removeprefix("gate_")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * predictions["generator"].nunique() + 3), 4))
    sns.boxplot(data=long, x="generator", y="gate weight", hue="expert", ax=ax, fliersize=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(title="expert", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    ax.set_title(title or "gate weights per test image, by generator")
    fig.tight_layout()
    return fig


def plot_pred_vs_mos(study: StudyResult) -> plt.Figure:
    """Predicted score vs MOS on the test split, one panel per variant (first seed)."""
    seed = study.runs[0].seed
    runs = [r for r in study.runs if r.seed == seed]
    ncols = min(3, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        p = run.predictions
        sns.scatterplot(data=p, x="pred", y="mos", hue="generator", s=14, ax=ax, legend=False)
        m = run.metrics["all_test"]
        ax.set_title(f"{run.variant}: SRCC {m['srcc']:.3f}, PLCC {m['plcc_logistic']:.3f}",
                     fontsize=9)
        ax.set(xlabel="predicted", ylabel="MOS")
    for ax in list(axes.flat)[len(runs):]:
        ax.remove()
    fig.tight_layout()
    return fig
