"""The generator-mean baseline: how much of a reported SRCC is just generator identity.

Each test image is predicted by the mean train MOS of the generator that made it (the global
train mean for a generator absent from train). No pixel is looked at, so any model that does
not beat this number has learned little beyond "which model made this image".
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.evaluation.metrics import evaluate, within_group_srcc_stats
from agiqa_lib.evaluation.results import ResultRecord
from agiqa_lib.data.splits import effective_seed, has_prompts, make_split, prompt_keys

MODEL_NAME = "generator_mean"


def has_generators(df: pd.DataFrame) -> bool:
    """Whether the dataset names a generator for its images (AI-generated image datasets)."""
    return "generator" in df.columns and bool((df["generator"].astype(str).str.strip() != "").any())


def generator_mean_predictions(df: pd.DataFrame, split: pd.Series,
                               part: str = "test") -> pd.Series:
    """Predictions for the rows of `part`: the mean train `mos` of the row's generator."""
    if not has_generators(df):
        raise AgiqaError("the generator-mean baseline needs a `generator` column; this dataset "
                         "has none (only AI-generated image datasets name their generators)")
    parts = split.reindex(df.index)
    train = df[parts == "train"]
    if train.empty:
        raise AgiqaError("the split has no train rows, so no generator mean can be learned")
    means = train.groupby("generator")["mos"].mean()
    rows = df[parts == part]
    return rows["generator"].map(means).fillna(train["mos"].mean()).astype(float).rename("pred")


def generator_mean_baseline(df: pd.DataFrame, protocols: Sequence[str] = ("ma_agiqa",
                            "clip_agiqa", "prompt_disjoint"), seed: int | None = None,
                            ci: bool = True, n_boot: int = 1000) -> pd.DataFrame:
    """Test-set metrics of the generator-mean baseline under each split protocol (one row each).

    Adds `within_prompt_srcc` when the dataset has prompts: how well generator identity ranks
    the different generators' images of one prompt. Within-generator SRCC is undefined for
    this baseline (its predictions are constant inside a generator), so it is not reported.
    """
    rows = []
    with_prompts = has_prompts(df)
    for protocol in protocols:
        split = make_split(df, protocol, seed)
        pred = generator_mean_predictions(df, split)
        test = df.loc[pred.index]
        metrics = evaluate(pred.to_numpy(), test["mos"].to_numpy(), ci=ci, n_boot=n_boot)
        if with_prompts:
            within = within_group_srcc_stats(pred.to_numpy(), test["mos"].to_numpy(),
                                             prompt_keys(test))
            metrics.update(within_prompt_srcc=within["within_group_srcc"],
                           n_prompt_groups=within["n_groups"])
        rows.append({"protocol": protocol, "seed": effective_seed(protocol, seed), **metrics})
    return pd.DataFrame(rows).set_index("protocol")


def baseline_records(table: pd.DataFrame, dataset: str,
                     target: str | None = None) -> list[ResultRecord]:
    """Rows of `generator_mean_baseline` as results-file records (profile "none": no pixels)."""
    records = []
    for protocol, row in table.iterrows():
        metrics = row.to_dict()
        metrics.pop("within_group_srcc", None)  # undefined: constant inside a generator
        records.append(ResultRecord.from_metrics(
            metrics, model=MODEL_NAME, dataset=dataset, protocol=str(protocol),
            seed=int(row["seed"]), profile="none", target=target,
            within_prompt_srcc=row.get("within_prompt_srcc")))
    return records
