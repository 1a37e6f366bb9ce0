"""Figures of notebook 03 (semantic vectors): PCA maps by MOS and generator, question similarity.

Every figure made from stand-in vectors (the `lite` profile) carries "STAND-IN" in its title.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.decomposition import PCA

from agiqa_lib.ma_agiqa.semantic import QUESTIONS
from agiqa_lib.viz.exploration import save_figure

__all__ = ["pca_table", "plot_pca", "plot_question_similarity", "plot_token_layout",
           "save_figure", "title_note", "token_layout_table"]

QUESTION_LABELS = {"semantic_content": "semantic content", "coherence": "coherence"}


def title_note(is_stand_in: bool, model_id: str) -> str:
    """The line every figure title ends with: the model, and a stand-in warning when it is one."""
    if is_stand_in:
        return f"STAND-IN vectors ({model_id}), not an MLLM's judgement"
    return f"vectors of {model_id}"


def pca_table(vectors: torch.Tensor, df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """2-D PCA of each question's N vectors (one basis per question), one row per (image, question).

    Columns: pc1, pc2, question, mos, generator; `.attrs["explained_variance_ratio"]` maps each
    question to the variance ratios of its two axes. (A basis shared by both questions spends
    its first axis on the question itself, which hides the structure among images.)
    """
    parts, ratios = [], {}
    generators = df["generator"].astype(str).to_numpy() if "generator" in df else ""
    for index, key in enumerate(QUESTIONS):
        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(vectors[:, index].float().numpy())
        label = QUESTION_LABELS[key]
        ratios[label] = pca.explained_variance_ratio_.tolist()
        parts.append(pd.DataFrame({"pc1": coords[:, 0], "pc2": coords[:, 1], "question": label,
                                   "mos": df["mos"].to_numpy(dtype=float),
                                   "generator": generators}))
    table = pd.concat(parts, ignore_index=True)
    table.attrs["explained_variance_ratio"] = ratios
    return table


def plot_pca(table: pd.DataFrame, colour: str, note: str) -> plt.Figure:
    """PCA scatter, one panel per question, coloured by `colour` ("mos" or "generator")."""
    questions = list(dict.fromkeys(table["question"]))
    fig, axes = plt.subplots(1, len(questions), figsize=(5.2 * len(questions), 4.6),
                             squeeze=False, layout="constrained")
    ratios = table.attrs.get("explained_variance_ratio", {})
    for ax, question in zip(axes.flat, questions):
        part = table[table["question"] == question]
        if colour == "mos":
            points = ax.scatter(part["pc1"], part["pc2"], c=part["mos"], cmap="viridis", s=9,
                                alpha=0.8, vmin=table["mos"].min(), vmax=table["mos"].max())
        else:
            sns.scatterplot(data=part, x="pc1", y="pc2", hue="generator", s=10, alpha=0.8,
                            ax=ax, legend=ax is axes.flat[-1],
                            hue_order=sorted(table["generator"].unique()))
        pc1, pc2 = ratios.get(question, [np.nan, np.nan])
        ax.set_title(f"question: {question}", fontsize=10)
        ax.set_xlabel(f"PC 1 ({pc1:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({pc2:.0%})")
    if colour == "mos":
        fig.colorbar(points, ax=axes.ravel().tolist(), label="MOS")
    else:
        axes.flat[-1].legend(fontsize=7, markerscale=1.5, bbox_to_anchor=(1.02, 1),
                             loc="upper left", title="generator")
    fig.suptitle(f"PCA of semantic vectors (one basis per question), coloured by {colour}\n"
                 f"{note}", fontsize=10)
    return fig


def plot_question_similarity(similarity: np.ndarray, df: pd.DataFrame, note: str) -> plt.Figure:
    """Per-image cosine similarity of the two questions' vectors: histogram, and against MOS."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    sns.histplot(similarity, bins=40, ax=left)
    left.set_xlabel("cosine(semantic content, coherence)")
    left.set_title(f"median {np.median(similarity):.4f}, range "
                   f"[{similarity.min():.4f}, {similarity.max():.4f}]", fontsize=9)
    right.scatter(df["mos"], similarity, s=6, alpha=0.6)
    right.set_xlabel("MOS")
    right.set_ylabel("cosine similarity")
    right.set_title("similarity of the two questions' vectors vs MOS", fontsize=9)
    fig.suptitle(f"How different are the two questions' vectors?\n{note}", fontsize=10)
    return fig


def token_layout_table(encoder, questions: dict[str, str] = QUESTIONS) -> pd.DataFrame:
    """One row per question: text vs image tokens of the sequence the mean pools over."""
    rows = []
    for key, question in questions.items():
        layout = encoder.token_layout(question)
        start, end = layout["image_span"]
        rows.append({"question": QUESTION_LABELS.get(key, key),
                     "text tokens": layout["n_text_tokens"],
                     "image tokens": layout["n_image_tokens"],
                     "positions pooled": layout["n_positions"],
                     "image positions": f"{start}..{end - 1}",
                     "image share of the mean": layout["n_image_tokens"] / layout["n_positions"]})
    return pd.DataFrame(rows).set_index("question")


def plot_token_layout(layout: dict, note: str) -> plt.Figure:
    """The pooled sequence as a strip: text tokens before the image, image tokens, text after."""
    start, end = layout["image_span"]
    total = layout["n_positions"]
    fig, ax = plt.subplots(figsize=(10, 1.9), layout="constrained")
    for lo, hi, colour in ((0, start, "C0"), (start, end, "C1"), (end, total, "C0")):
        if hi > lo:
            ax.barh(0, hi - lo, left=lo, color=colour, edgecolor="white", height=0.6)
            inside = (hi - lo) / total > 0.06
            ax.text((lo + hi) / 2, 0 if inside else 0.38, str(hi - lo), ha="center",
                    va="center" if inside else "bottom", fontsize=8,
                    color="white" if inside else "black")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("C0", "C1")]
    ax.legend(handles, ["text tokens", "image tokens"], loc="upper left",
              bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    ax.set(xlim=(0, total), ylim=(-0.5, 0.7), yticks=[], xlabel="position in the sequence")
    ax.set_title(f"what the mean pools over: {total} positions, {end - start} of them image "
                 f"tokens\n{note}", fontsize=9)
    return fig
