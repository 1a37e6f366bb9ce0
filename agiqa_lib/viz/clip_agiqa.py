"""Figures of notebook 02: quality bins, learning curves, predicted-vs-MOS scatter, results."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from agiqa_lib.viz.exploration import save_figure

__all__ = ["plot_bins", "plot_learning_curves", "plot_predictions", "plot_results", "save_figure"]


def plot_bins(train_mos: Sequence[float], cutpoints: Sequence[float],
              class_names: Sequence[str]) -> plt.Figure:
    """Histogram of the training MOS with the cut-points that name the six prompts."""
    fig, ax = plt.subplots(figsize=(7, 3))
    sns.histplot(np.asarray(train_mos, dtype=float), bins=40, ax=ax, color="0.6")
    edges = [ax.get_xlim()[0], *cutpoints, ax.get_xlim()[1]]
    for cut in cutpoints:
        ax.axvline(cut, color="C3", lw=1)
    for name, lo, hi in zip(class_names, edges[:-1], edges[1:]):
        ax.text((lo + hi) / 2, ax.get_ylim()[1] * 0.92, name, ha="center", fontsize=8)
    ax.set(xlabel="train MOS", ylabel="images", title="Quality classes = bins of the train MOS")
    fig.tight_layout()
    return fig


def plot_learning_curves(histories: dict[str, pd.DataFrame],
                         best_epochs: dict[str, int] | None = None) -> plt.Figure:
    """Train loss (left) and SRCC of every monitored part per epoch (right), one line per run."""
    fig, (ax_loss, ax_srcc) = plt.subplots(1, 2, figsize=(11, 3.5))
    for label, hist in histories.items():
        ax_loss.plot(hist["epoch"], hist["train_loss"], label=label)
        for column in (c for c in hist.columns if c.endswith("_srcc")):
            ax_srcc.plot(hist["epoch"], hist[column], label=f"{label}: {column[:-5]}")
    for rule, epoch in (best_epochs or {}).items():
        ax_srcc.axvline(epoch, ls=":", color="0.5")
        ax_srcc.text(epoch, ax_srcc.get_ylim()[0], rule, rotation=90, fontsize=7, va="bottom")
    ax_loss.set(xlabel="epoch", ylabel="train MSE", title="Training loss", yscale="log")
    ax_srcc.set(xlabel="epoch", ylabel="SRCC", title="SRCC while training")
    ax_loss.legend(fontsize=7)
    ax_srcc.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_predictions(predictions: dict[str, np.ndarray], mos: Sequence[float],
                     ncols: int = 3) -> plt.Figure:
    """Predicted score against MOS, one panel per model row of the table."""
    mos = np.asarray(mos, dtype=float)
    n = len(predictions)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (label, pred) in zip(axes.flat, predictions.items()):
        ax.scatter(mos, pred, s=6, alpha=0.5)
        ax.set(title=label, xlabel="MOS", ylabel="prediction")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_results(table: pd.DataFrame) -> plt.Figure:
    """SRCC with 95% bootstrap intervals, one bar per (model, selection) row."""
    labels = [m if s == "none" else f"{m} / {s}" for m, s in zip(table["model"], table["selection"])]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1))
    y = np.arange(len(table))
    err = np.vstack([table["srcc"] - table["srcc_lo"], table["srcc_hi"] - table["srcc"]])
    ax.barh(y, table["srcc"], xerr=err, color="C0", alpha=0.7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="test SRCC (95% bootstrap CI)", title="CLIP-AGIQA, baselines and controls")
    fig.tight_layout()
    return fig
