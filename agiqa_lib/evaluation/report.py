"""Collect the study's results and set them beside the numbers the papers report.

Paper numbers are quoted as reported (SRCC / PLCC), never recomputed. A row of this study
counts as a reproduction only when it used the `full` profile on the real dataset under the
paper's split; `lite` and `demo` rows are labelled as what they are.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from agiqa_lib.evaluation.results import IDENTITY_FIELDS, NUMERIC_IDENTITY_FIELDS, identity_value

# (paper model, dataset, target, SRCC, PLCC, source) exactly as the papers report them.
PAPER_RESULTS = pd.DataFrame(
    [
        ("ma_agiqa", "agiqa3k", "mos_quality", 0.8939, 0.9273, "Wang et al. 2024 (MA-AGIQA)"),
        ("ma_agiqa", "aigiqa20k", "mos", 0.8644, 0.9050, "Wang et al. 2024 (MA-AGIQA)"),
        ("ma_agiqa", "koniq10k", "mos", 0.9339, 0.9482, "Wang et al. 2024 (MA-AGIQA)"),
        ("ma_agiqa", "spaq", "mos", 0.9278, 0.9321, "Wang et al. 2024 (MA-AGIQA)"),
        ("maniqa", "agiqa3k", "mos_quality", 0.8618, 0.9115, "as reported by Wang et al. 2024"),
        ("clip_agiqa", "agiqa3k", "mos_quality", 0.8618, 0.8978, "Tang et al. ICPR 2024 (CLIP-AGIQA)"),
        ("clip_agiqa", "aigciqa2023", "quality", 0.8140, 0.8302, "Tang et al. ICPR 2024 (CLIP-AGIQA)"),
        ("clip_agiqa", "aigciqa2023", "authenticity", 0.7940, 0.7797, "Tang et al. ICPR 2024 (CLIP-AGIQA)"),
    ],
    columns=["model", "dataset", "target", "paper_srcc", "paper_plcc", "source"],
)

# The split and selection rule each paper's released code used, for matching our rows.
PAPER_PROTOCOL = {"ma_agiqa": "ma_agiqa", "maniqa": "ma_agiqa", "clip_agiqa": "clip_agiqa"}
PAPER_VARIANT = {"ma_agiqa": "released_gate"}
PAPER_SELECTION = {"clip_agiqa": "best_on_test"}
# Which of our PLCCs matches the paper's: MA-AGIQA's performance.py fits the 4-parameter
# logistic first; CLIP-AGIQA reports Pearson on the raw predictions.
PAPER_PLCC = {"ma_agiqa": "plcc_logistic", "maniqa": "plcc_logistic", "clip_agiqa": "plcc_raw"}
# A configuration = a record's identity without the seed (seeds are summarised over).
IDENTITY = [k for k in IDENTITY_FIELDS if k != "seed"]
SUMMARY_METRICS = ("srcc", "krcc", "plcc_raw", "plcc_logistic", "rmse_logistic",
                   "within_generator_srcc", "within_prompt_srcc")
REAL_DATASETS = {"agiqa3k", "aigciqa2023", "aigiqa20k", "koniq10k", "spaq"}


def provenance(profile: str, dataset: str, weights: str = "pretrained") -> str:
    """How a row may be read: a reproduction (full, real data) or a labelled stand-in."""
    if weights == "random":
        return "RANDOM weights: a pipeline check, the numbers mean nothing"
    if dataset not in REAL_DATASETS:
        return "synthetic demo data: not comparable to any paper"
    if profile == "full":
        return "reproduction (full profile, real data)"
    if profile == "lite":
        return "lite stand-in weights: NOT a reproduction of the paper's model"
    return f"{profile} profile: smoke test only"


def _with_identity(results: pd.DataFrame) -> pd.DataFrame:
    frame = results.copy()
    for col in IDENTITY:
        if col not in frame:
            frame[col] = None
    for col in NUMERIC_IDENTITY_FIELDS:  # as ResultRecord.identity writes them ("-": released)
        frame[col] = frame[col].astype(object).map(lambda v, col=col: identity_value(col, v))
    frame[IDENTITY] = frame[IDENTITY].astype(object).where(frame[IDENTITY].notna(), "-")
    return frame


def seed_summary(results: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS,
                 confidence: float = 0.95) -> pd.DataFrame:
    """Mean over seeds per configuration, with a t-interval when there are 2+ seeds."""
    if results.empty:
        return pd.DataFrame()
    frame = _with_identity(results)
    rows = []
    for key, group in frame.groupby(IDENTITY, sort=True):
        row = dict(zip(IDENTITY, key))
        row["n_seeds"] = group["seed"].nunique() if "seed" in group else len(group)
        row["n"] = int(group["n"].iloc[0]) if "n" in group else np.nan
        for metric in metrics:
            if metric not in group:
                continue
            values = group[metric].astype(float).dropna().to_numpy()
            row[metric] = values.mean() if len(values) else np.nan
            if len(values) >= 2:
                half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
                row[f"{metric}_ci"] = (row[metric] - half, row[metric] + half)
            else:
                row[f"{metric}_ci"] = None
        row["provenance"] = provenance(str(row["profile"]), str(row["dataset"]),
                                       str(row["weights"]))
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Papers' reported numbers beside this study's matching rows (seed means).

    Matching uses the paper's own split protocol and, where relevant, the released variant
    and selection rule; rows with no run of ours keep NaN in our columns.
    """
    summary = seed_summary(results)
    rows = []
    for paper in PAPER_RESULTS.itertuples(index=False):
        matched = pd.DataFrame()
        if not summary.empty:
            mask = (summary["model"] == paper.model) & (summary["dataset"] == paper.dataset) \
                & (summary["protocol"] == PAPER_PROTOCOL[paper.model])
            mask &= summary["weights"] != "random"  # pipeline checks never face a paper
            # the released head input (scale 1.0, no separate text scale)
            mask &= (summary["feature_scale"] == "-") & (summary["text_feature_scale"] == "-")
            # a record without a target used the dataset's default target
            mask &= summary["target"].isin([paper.target, "-"])
            if paper.model in PAPER_VARIANT:
                mask &= summary["variant"] == PAPER_VARIANT[paper.model]
            if paper.model in PAPER_SELECTION:
                mask &= summary["selection"] == PAPER_SELECTION[paper.model]
            if "evaluation" in summary:
                mask &= summary["evaluation"].isin(["-", "all_test"])
            matched = summary[mask]
        base = paper._asdict()
        if matched.empty:
            rows.append({**base, "profile": None, "weights": None, "srcc": np.nan,
                         "plcc": np.nan, "n_seeds": 0, "provenance": "not run in this study"})
        plcc = PAPER_PLCC[paper.model]
        for _, row in matched.iterrows():
            rows.append({**base, "profile": row["profile"], "weights": row["weights"],
                         "srcc": row["srcc"], "plcc": row.get(plcc, np.nan),
                         "n_seeds": row["n_seeds"], "provenance": row["provenance"]})
    return pd.DataFrame(rows)


def protocol_comparison(results: pd.DataFrame, metric: str = "srcc") -> pd.DataFrame:
    """One row per model configuration, one column per split protocol (seed means)."""
    summary = seed_summary(results)
    if summary.empty:
        return summary
    keys = [k for k in IDENTITY if k != "protocol"]
    return summary.pivot_table(index=keys, columns="protocol", values=metric, aggfunc="first")


def per_generator_error(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per-generator mean absolute error, bias and SRCC of one run's predictions."""
    if "generator" not in predictions:
        raise ValueError("predictions have no generator column")
    rows = []
    for gen, group in predictions.groupby("generator", sort=True):
        err = group["pred"] - group["mos"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srcc = stats.spearmanr(group["pred"], group["mos"])[0] if len(group) >= 3 else np.nan
        rows.append({"generator": gen, "n": len(group), "mae": err.abs().mean(),
                     "bias": err.mean(), "srcc": srcc})
    return pd.DataFrame(rows)
