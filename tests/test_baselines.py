"""The generator-mean baseline: predictions, metrics table, results records, real AGIQA-3K."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from agiqa_lib.evaluation.baselines import (baseline_records, generator_mean_baseline,
                                 generator_mean_predictions, has_generators)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.evaluation.results import ResultRecord, add_records, load_results
from agiqa_lib.data.splits import make_split


def small_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "name": [f"{g}_{i}.jpg" for g, i in zip("aabbbcd", range(7))],
        "generator": list("aabbbcd"),
        "prompt": ["p0", "p1", "p0", "p1", "p2", "p2", "p0"],
        "mos": [1.0, 3.0, 4.0, 5.0, 6.0, 2.0, 9.0],
    })


def test_predictions_are_train_means_with_global_fallback():
    df = small_frame()
    split = pd.Series(["train", "train", "train", "train", "test", "test", "test"], index=df.index)
    pred = generator_mean_predictions(df, split)
    assert list(pred.index) == [4, 5, 6]
    # b: mean of train b rows (4, 5); c, d: unseen in train -> global train mean (1+3+4+5)/4
    assert pred.tolist() == [4.5, 3.25, 3.25]


def test_baseline_needs_generators():
    df = small_frame().assign(generator="")
    assert not has_generators(df)
    with pytest.raises(AgiqaError, match="needs a `generator`"):
        generator_mean_predictions(df, make_split(df, "ma_agiqa"))


def synthetic_agiqa(seed: int = 0) -> pd.DataFrame:
    """Generator effect plus image noise: the baseline must land well above 0 and below 1."""
    rng = np.random.default_rng(seed)
    offsets = np.linspace(0.5, 4.0, 8)
    rows = [{"name": f"g{g}_{p}.jpg", "generator": f"g{g}", "prompt": f"p{p}",
             "mos": offsets[g] + rng.normal(0, 0.8)} for g in range(8) for p in range(60)]
    return pd.DataFrame(rows)


def test_baseline_table_matches_a_manual_computation():
    df = synthetic_agiqa()
    table = generator_mean_baseline(df, ["ma_agiqa", "prompt_disjoint"], ci=True, n_boot=200)
    assert list(table.index) == ["ma_agiqa", "prompt_disjoint"]
    assert table.loc["ma_agiqa", "seed"] == 20 and table.loc["prompt_disjoint", "seed"] == 0
    split = make_split(df, "ma_agiqa")
    train, test = df[split == "train"], df[split == "test"]
    manual = test["generator"].map(train.groupby("generator")["mos"].mean())
    assert table.loc["ma_agiqa", "srcc"] == pytest.approx(stats.spearmanr(manual, test["mos"])[0])
    assert table.loc["ma_agiqa", "n"] == len(test)
    assert 0.3 < table.loc["ma_agiqa", "srcc"] < 0.95
    lo, hi = table.loc["ma_agiqa", "srcc_ci"]
    assert lo < table.loc["ma_agiqa", "srcc"] < hi
    assert np.isfinite(table.loc["prompt_disjoint", "within_prompt_srcc"])


def test_records_fit_the_results_file(tmp_path):
    df = synthetic_agiqa(1)
    table = generator_mean_baseline(df, ["ma_agiqa", "clip_agiqa"], ci=True, n_boot=100)
    records = baseline_records(table, "demo", "mos_quality")
    path = tmp_path / "results.jsonl"
    assert all(isinstance(r, ResultRecord) for r in records)
    add_records(records, path)
    add_records(records[:1], path)  # re-running replaces, never duplicates
    back = load_results(path)
    assert len(back) == 2
    assert set(back["model"]) == {"generator_mean"}
    assert (back["profile"] == "none").all() and (back["selection"] == "none").all()
    assert back.set_index("protocol").loc["clip_agiqa", "seed"] == 42
    row = back.set_index("protocol").loc["ma_agiqa"]
    assert row["srcc"] == pytest.approx(table.loc["ma_agiqa", "srcc"])
    assert row["rmse_logistic"] == pytest.approx(table.loc["ma_agiqa", "rmse_logistic"])
    assert row["plcc_raw"] == pytest.approx(table.loc["ma_agiqa", "plcc"])
    assert row["within_generator_srcc"] is None  # constant inside a generator: undefined
    assert len(row["srcc_ci"]) == 2


@pytest.mark.real_data
def test_real_agiqa3k_generator_mean_srcc(agiqa3k_root):
    """The issue quotes SRCC ~0.73 for AGIQA-3K under the ma_agiqa split.

    Split and MOS are fixed, so the value is deterministic (0.7273); the 0.01 tolerance only
    covers the two-digit rounding of the quoted number, and a wrong split, target or
    fallback would move it by more (clip_agiqa gives 0.763, mos_align 0.619).
    """
    from agiqa_lib.data.datasets import load_dataset

    df = load_dataset("agiqa3k", root=agiqa3k_root, check_files=False)
    table = generator_mean_baseline(df, ["ma_agiqa"], ci=False)
    assert table.loc["ma_agiqa", "n"] == 597
    assert table.loc["ma_agiqa", "srcc"] == pytest.approx(0.73, abs=0.01)
