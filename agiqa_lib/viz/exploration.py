"""Figures of notebook 01 (data exploration): score distributions, generators, best/worst images."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from PIL import Image

from agiqa_lib.viz import save_figure  # noqa: F401  (re-exported for notebooks)

ALIGNMENT_COLUMNS = ("mos_align", "mos_correspondence")
QUALITY_COLUMN = "mos_quality"


def score_columns(df: pd.DataFrame) -> list[str]:
    """The dataset's own MOS/std columns (`mos_*`, `std_*`), or just `mos` when it has none."""
    columns = [c for c in df.columns if c.startswith(("mos_", "std_"))
               and pd.api.types.is_numeric_dtype(df[c])]
    return columns or ["mos"]


def plot_score_distributions(df: pd.DataFrame) -> plt.Figure:
    """One histogram (with a density curve) per MOS / std column."""
    columns = score_columns(df)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        sns.histplot(df[column].dropna(), bins=30, kde=True, ax=ax)
        ax.set_title(f"{column} (mean {df[column].mean():.2f}, sd {df[column].std():.2f})",
                     fontsize=9)
    fig.tight_layout()
    return fig


def plot_generator_boxplots(df: pd.DataFrame, column: str = "mos") -> plt.Figure:
    """Box plot of `column` per generator, generators sorted by median."""
    order = df.groupby("generator")[column].median().sort_values().index.tolist()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(order) + 1.5))
    sns.boxplot(data=df, x=column, y="generator", order=order, ax=ax, color="#9ecae1",
                fliersize=2)
    ax.set_title(f"{column} per generator ({len(order)} generators, sorted by median)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def alignment_column(df: pd.DataFrame) -> str | None:
    """The text-image alignment score column of the dataset, if it has one."""
    return next((c for c in ALIGNMENT_COLUMNS if c in df.columns), None)


def plot_quality_vs_alignment(df: pd.DataFrame) -> plt.Figure:
    """Scatter of perceptual quality against text-image alignment, coloured by generator.

    Datasets without both scores get a figure that says so, so the notebook runs on any of them.
    """
    align = alignment_column(df)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if align is None or QUALITY_COLUMN not in df.columns:
        ax.text(0.5, 0.5, "this dataset has no separate quality and alignment scores",
                ha="center", va="center")
        ax.axis("off")
        return fig
    hue = "generator" if (df["generator"] != "").any() else None
    sns.scatterplot(data=df, x=QUALITY_COLUMN, y=align, hue=hue, s=10, alpha=0.6, ax=ax)
    corr = df[[QUALITY_COLUMN, align]].corr(method="spearman").iloc[0, 1]
    ax.set_title(f"quality vs alignment (SRCC {corr:.3f})", fontsize=10)
    if hue:
        ax.legend(fontsize=7, markerscale=1.5, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_best_worst(df: pd.DataFrame, n: int = 5, column: str = "mos") -> plt.Figure:
    """Grid of the `n` highest-scored images (top row) and the `n` lowest (bottom row)."""
    ranked = df.dropna(subset=[column]).sort_values(column, ascending=False, kind="mergesort")
    rows = {"best": ranked.head(n), "worst": ranked.tail(n).iloc[::-1]}
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 6.8), squeeze=False, layout="constrained")
    for r, (label, sub) in enumerate(rows.items()):
        for ax, (_, item) in zip(axes[r], sub.iterrows()):
            with Image.open(item["path"]) as img:
                img.thumbnail((256, 256))
                ax.imshow(img.convert("RGB"))
            prompt = textwrap.shorten(str(item.get("prompt", "")), 60, placeholder="...")
            ax.set_title(f"{label}: {item[column]:.2f}\n{item.get('generator', '')}", fontsize=8)
            ax.set_xlabel("\n".join(textwrap.wrap(prompt, 28)), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r][len(sub):]:
            ax.axis("off")
    return fig


def plot_baseline(table: pd.DataFrame) -> plt.Figure:
    """SRCC of the generator-mean baseline per split protocol, with bootstrap 95% intervals."""
    fig, ax = plt.subplots(figsize=(1.6 * len(table) + 2, 3.2))
    protocols = table.index.tolist()
    ax.bar(protocols, table["srcc"], color="#6baed6")
    if "srcc_ci" in table.columns:
        lo = [s - ci[0] for s, ci in zip(table["srcc"], table["srcc_ci"])]
        hi = [ci[1] - s for s, ci in zip(table["srcc"], table["srcc_ci"])]
        ax.errorbar(protocols, table["srcc"], yerr=[lo, hi], fmt="none", color="black", capsize=4)
    for x, value in enumerate(table["srcc"]):
        ax.text(x, value / 2, f"{value:.3f}", ha="center", color="white", fontsize=9)
    ax.set_ylabel("test SRCC")
    ax.set_ylim(min(0.0, table["srcc"].min() - 0.05), 1.0)
    ax.set_title("generator-mean baseline: SRCC from generator identity alone", fontsize=10)
    fig.tight_layout()
    return fig
