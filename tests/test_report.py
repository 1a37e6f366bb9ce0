"""Results collection: seed aggregation, paper comparison labels, per-generator errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agiqa_lib.evaluation.report import (PAPER_RESULTS, comparison_table, per_generator_error,
                              protocol_comparison, seed_summary)
from agiqa_lib.evaluation.results import append_result, load_results, save_predictions


def _record(seed, srcc, **kw):
    base = dict(model="ma_agiqa", variant="released_gate", dataset="agiqa3k", protocol="ma_agiqa",
                seed=seed, profile="lite", selection="best_on_val", evaluation="all_test",
                srcc=srcc, plcc=srcc + 0.01, krcc=srcc - 0.2, rmse=0.5, n=597)
    base.update(kw)
    return base


def test_append_replaces_same_identity_and_keeps_others(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(_record(1, 0.5), path)
    append_result(_record(1, 0.6), path)
    append_result(_record(2, 0.7), path)
    frame = load_results(path)
    assert sorted(frame["srcc"]) == [0.6, 0.7]
    with pytest.raises(ValueError, match="lacks keys"):
        append_result({"model": "x"}, path)


def test_seed_summary_mean_and_t_interval():
    frame = pd.DataFrame([_record(s, v) for s, v in [(1, 0.80), (2, 0.82), (3, 0.84)]])
    row = seed_summary(frame).iloc[0]
    assert row["n_seeds"] == 3
    assert row["srcc"] == pytest.approx(0.82)
    lo, hi = row["srcc_ci"]
    half = 4.302652729911275 * 0.02 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (lo, hi) == pytest.approx((0.82 - half, 0.82 + half))
    assert "NOT a reproduction" in row["provenance"]


def test_comparison_matches_paper_protocol_and_labels_rows():
    frame = pd.DataFrame([
        _record(1, 0.80),
        _record(1, 0.60, protocol="prompt_disjoint"),  # not the paper's split: not matched
        _record(1, 0.90, profile="full"),
        _record(1, 0.70, dataset="demo"),
    ])
    table = comparison_table(frame)
    ours = table[(table["model"] == "ma_agiqa") & (table["dataset"] == "agiqa3k")]
    assert sorted(ours["srcc"]) == [0.80, 0.90]
    assert set(ours["paper_srcc"]) == {0.8939}
    assert ours.set_index("profile").loc["full", "provenance"].startswith("reproduction")
    assert len(table[table["provenance"] == "not run in this study"]) == len(PAPER_RESULTS) - 1


def test_protocol_comparison_pivots_splits():
    frame = pd.DataFrame([_record(1, 0.8), _record(1, 0.6, protocol="prompt_disjoint")])
    pivot = protocol_comparison(frame)
    assert pivot.loc[pivot.index[0], "prompt_disjoint"] == pytest.approx(0.6)
    assert pivot.loc[pivot.index[0], "ma_agiqa"] == pytest.approx(0.8)


def test_per_generator_error_and_prediction_files(tmp_path):
    preds = pd.DataFrame({"name": list("abcdef"), "generator": ["g1"] * 3 + ["g2"] * 3,
                          "mos": [1, 2, 3, 1, 2, 3], "pred": [1, 2, 3, 2, 3, 4.0]})
    table = per_generator_error(preds).set_index("generator")
    assert table.loc["g1", "mae"] == 0 and table.loc["g2", "bias"] == 1
    record = _record(1, 0.5)
    path = save_predictions(preds, record, tmp_path)
    assert record["predictions"] == str(path)
    assert pd.read_csv(path).shape == (6, 4)
