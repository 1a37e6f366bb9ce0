"""Figures of notebook 05: predicted-vs-MOS per run, per-generator error, ablations."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from agiqa_lib.evaluation.report import per_generator_error
from agiqa_lib.viz import save_figure  # noqa: F401  (re-exported for notebooks)


def _label(record: pd.Series) -> str:
    parts = [record["model"], record.get("variant"), record["protocol"], record.get("selection"),
             f"seed {record['seed']}"]
    return " | ".join(str(p) for p in parts if isinstance(p, str) or pd.notna(p))


def runs_with_predictions(results: pd.DataFrame) -> pd.DataFrame:
    """Result records whose per-image predictions file exists."""
    if results.empty or "predictions" not in results:
        return results.iloc[0:0]
    has = results["predictions"].map(lambda p: isinstance(p, str) and Path(p).is_file())
    return results[has]


def plot_prediction_scatter(results: pd.DataFrame, max_panels: int = 12) -> plt.Figure:
    """One predicted-vs-MOS scatter per run, coloured by generator."""
    runs = runs_with_predictions(results).head(max_panels)
    cols = min(3, max(1, len(runs)))
    rows = max(1, math.ceil(len(runs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (_, run) in zip(axes.flat, runs.iterrows()):
        preds = pd.read_csv(run["predictions"])
        sns.scatterplot(data=preds, x="pred", y="mos", hue="generator" if "generator" in preds else None,
                        s=10, ax=ax, legend=False)
        ax.set_title(f"{_label(run)}\nSRCC {run['srcc']:.3f}", fontsize=8)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_generator_error(predictions: pd.DataFrame, title: str) -> plt.Figure:
    """Bar chart of per-generator mean absolute error and bias for one run."""
    table = per_generator_error(predictions).melt(id_vars="generator", value_vars=["mae", "bias"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(data=table, x="generator", y="value", hue="variable", ax=ax)
    ax.tick_params(axis="x", rotation=60)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_metric_bars(summary: pd.DataFrame, metric: str = "srcc", by: str = "variant") -> plt.Figure:
    """Bar chart of a metric per configuration (e.g. MA-AGIQA ablations), one hue per protocol."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(data=summary, x=by, y=metric, hue="protocol", ax=ax)
    ax.tick_params(axis="x", rotation=30)
    ax.set_ylim(min(0, summary[metric].min() - 0.05), 1)
    fig.tight_layout()
    return fig
