"""Results file and report: typed records, identity, old files, seed aggregation, paper
comparison labels, per-generator errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agiqa_lib.evaluation.report import (PAPER_RESULTS, comparison_table, per_generator_error,
                                         protocol_comparison, seed_summary)
from agiqa_lib.evaluation.results import (ResultRecord, add_records, load_results, read_records,
                                          save_predictions)


def _record(seed, srcc, **kw) -> ResultRecord:
    base = dict(model="ma_agiqa", variant="released_gate", dataset="agiqa3k", protocol="ma_agiqa",
                seed=seed, profile="lite", selection="best_on_val", evaluation="all_test",
                srcc=srcc, plcc_logistic=srcc + 0.01, plcc_raw=srcc, krcc=srcc - 0.2,
                rmse_logistic=0.5, n=597)
    base.update(kw)
    return ResultRecord(**base)


def _frame(records) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in records])


def test_add_replaces_same_identity_and_keeps_others(tmp_path):
    path = tmp_path / "r.jsonl"
    add_records([_record(1, 0.5)], path)
    add_records([_record(1, 0.6)], path)
    add_records([_record(2, 0.7), _record(2, 0.7, target="mos_align")], path)
    frame = load_results(path)
    assert sorted(frame["srcc"]) == [0.6, 0.7, 0.7]  # target is part of the identity
    with pytest.raises(TypeError, match="ResultRecord"):
        add_records([{"model": "x"}], path)


def _add_seeds(path, seeds) -> None:
    for seed in seeds:
        add_records([_record(seed, 0.5)], path)


def test_writers_at_the_same_time_keep_each_others_records(tmp_path):
    """Several processes adding records to one file at the same time: none is lost."""
    import multiprocessing

    path = tmp_path / "r.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_seeds, args=(path, range(i * 100, i * 100 + 25)))
               for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers)
    assert sorted(load_results(path)["seed"]) == [s for i in range(3)
                                                  for s in range(i * 100, i * 100 + 25)]


def test_from_metrics_names_every_metric_unambiguously():
    metrics = {"srcc": 0.8, "krcc": 0.6, "plcc": 0.7, "plcc_logistic": 0.75,
               "rmse_logistic": 0.4, "n": 10, "fit": "logistic", "within_group_srcc": 0.3,
               "srcc_ci": (0.7, 0.9), "plcc_ci": (0.6, 0.8)}
    record = ResultRecord.from_metrics(metrics, model="m", dataset="d", protocol="p",
                                       profile="lite", seed=1)
    assert (record.plcc_raw, record.plcc_logistic, record.rmse_logistic) == (0.7, 0.75, 0.4)
    assert record.within_generator_srcc == 0.3 and record.srcc_ci == (0.7, 0.9)
    assert ResultRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_old_results_files_still_read(tmp_path):
    """Files written before the typed record: `plcc` meant raw (CLIP-AGIQA, baselines) or
    logistic with `plcc_raw` beside it (MA-AGIQA); `rmse` and `within_group_srcc` renamed."""
    old = [
        {"model": "clip_agiqa", "dataset": "agiqa3k", "protocol": "clip_agiqa", "seed": 0,
         "profile": "lite", "selection": "last", "srcc": 0.59, "plcc": 0.66, "krcc": 0.42,
         "rmse": 0.61, "n": 597, "plcc_logistic": 0.67, "srcc_ci": [0.5, 0.6],
         "within_group_srcc": 0.3, "epochs": 20, "n_aug_views": 2},
        {"model": "ma_agiqa", "variant": "released_gate", "dataset": "agiqa3k",
         "protocol": "ma_agiqa", "seed": 20, "profile": "lite", "selection": "best_on_val",
         "evaluation": "all_test", "srcc": 0.80, "plcc": 0.86, "krcc": 0.6, "rmse": 0.4,
         "n": 597, "plcc_raw": 0.84, "plcc_logistic": 0.86, "within_group_srcc": 0.49,
         "mllm_stand_in": True, "best_epoch": 9},
    ]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    clip, ma = read_records(path)
    assert (clip.plcc_raw, clip.plcc_logistic, clip.rmse_logistic) == (0.66, 0.67, 0.61)
    assert clip.within_generator_srcc == 0.3 and clip.epochs == 20
    assert clip.extra == {"n_aug_views": 2} and clip.srcc_ci == (0.5, 0.6)
    assert (ma.plcc_raw, ma.plcc_logistic, ma.best_epoch, ma.mllm_stand_in) == (0.84, 0.86, 9, True)
    # adding a new record for the same run replaces the old line
    add_records([_record(20, 0.81)], path)
    assert [r.srcc for r in read_records(path)] == [0.59, 0.81]


def test_feature_scale_is_part_of_the_identity_and_old_files_match_the_release(tmp_path):
    """CLIP-AGIQA records of two feature scales are two runs; a record at the released 1.0
    replaces one written before the field existed (same identity)."""
    clip = dict(model="clip_agiqa", variant=None, protocol="clip_agiqa", selection="best_on_test",
                evaluation="all_test")
    old = {"model": "clip_agiqa", "dataset": "agiqa3k", "protocol": "clip_agiqa", "seed": 0,
           "profile": "lite", "selection": "best_on_test", "srcc": 0.59, "plcc": 0.66,
           "n": 597}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n")
    (before,) = read_records(path)
    assert before.feature_scale is None
    released = _record(0, 0.60, feature_scale=1.0, **clip)
    scaled = _record(0, 0.70, feature_scale=22.6, **clip)
    assert released.identity == before.identity == _record(0, 0.6, **clip).identity
    assert scaled.identity != released.identity and "22.6" in scaled.identity
    two = _record(0, 0.7, feature_scale=2, **clip)
    assert two.identity == _record(0, 0.7, feature_scale=2.0, **clip).identity
    add_records([released], path)  # replaces the old line
    add_records([scaled], path)  # another run: kept beside it
    add_records([_record(0, 0.72, feature_scale=22.6, **clip)], path)  # replaces the scaled one
    records = read_records(path)
    assert [(r.feature_scale, r.srcc) for r in records] == [(1.0, 0.60), (22.6, 0.72)]
    assert ResultRecord.from_dict(json.loads(json.dumps(records[1].to_dict()))) == records[1]
    frame = load_results(path)
    summary = seed_summary(frame).set_index("feature_scale")
    assert summary.loc["-", "srcc"] == 0.60 and summary.loc["22.6", "srcc"] == 0.72
    ours = comparison_table(frame).query("model == 'clip_agiqa' and dataset == 'agiqa3k'")
    assert list(ours["srcc"]) == [0.60]  # the papers face the released scale only
    assert save_predictions(pd.DataFrame({"name": ["a"], "mos": [1.0], "pred": [1.0]}),
                            records[1], tmp_path).stem.endswith("_22.6")


def test_text_feature_scale_is_part_of_the_identity(tmp_path):
    """Scaling the image feature only (text scale 1.0) is another run than scaling both; the
    papers face neither."""
    clip = dict(model="clip_agiqa", variant=None, protocol="clip_agiqa",
                selection="best_on_test", evaluation="all_test", feature_scale=22.6)
    both = _record(0, 0.66, **clip)
    image_only = _record(0, 0.75, text_feature_scale=1.0, **clip)
    assert both.identity != image_only.identity
    assert image_only.identity == _record(0, 0.7, text_feature_scale=1, **clip).identity
    path = tmp_path / "results.jsonl"
    released = _record(0, 0.60, **{**clip, "feature_scale": 1.0})
    add_records([both, image_only, released, _record(0, 0.8, text_feature_scale=2.0,
                                                     **{**clip, "feature_scale": 1.0})], path)
    frame = load_results(path)
    summary = seed_summary(frame).set_index(["feature_scale", "text_feature_scale"])
    assert summary.loc[("22.6", "1.0"), "srcc"] == 0.75 and summary.loc[("22.6", "-"), "srcc"] == 0.66
    ours = comparison_table(frame).query("model == 'clip_agiqa' and dataset == 'agiqa3k'")
    assert list(ours["srcc"]) == [0.60]
    assert save_predictions(pd.DataFrame({"name": ["a"], "mos": [1.0], "pred": [1.0]}),
                            image_only, tmp_path).stem.endswith("_22.6_1.0")


def test_seed_summary_mean_and_t_interval():
    frame = _frame([_record(s, v) for s, v in [(1, 0.80), (2, 0.82), (3, 0.84)]])
    row = seed_summary(frame).iloc[0]
    assert row["n_seeds"] == 3
    assert row["srcc"] == pytest.approx(0.82)
    lo, hi = row["srcc_ci"]
    half = 4.302652729911275 * 0.02 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (lo, hi) == pytest.approx((0.82 - half, 0.82 + half))
    assert "NOT a reproduction" in row["provenance"]


def test_comparison_matches_paper_protocol_and_labels_rows():
    frame = _frame([
        _record(1, 0.80),
        _record(1, 0.60, protocol="prompt_disjoint"),  # not the paper's split: not matched
        _record(1, 0.90, profile="full"),
        _record(1, 0.95, profile="full", weights="random"),  # a pipeline check: never matched
        _record(1, 0.70, dataset="demo"),
    ])
    table = comparison_table(frame)
    ours = table[(table["model"] == "ma_agiqa") & (table["dataset"] == "agiqa3k")]
    assert sorted(ours["srcc"]) == [0.80, 0.90]
    assert sorted(ours["plcc"]) == pytest.approx([0.81, 0.91])  # MA-AGIQA: logistic PLCC
    assert set(ours["paper_srcc"]) == {0.8939}
    assert ours.set_index("profile").loc["full", "provenance"].startswith("reproduction")
    assert len(table[table["provenance"] == "not run in this study"]) == len(PAPER_RESULTS) - 1
    random_row = seed_summary(frame).query("weights == 'random'").iloc[0]
    assert random_row["provenance"].startswith("RANDOM weights")


def test_protocol_comparison_pivots_splits():
    frame = _frame([_record(1, 0.8), _record(1, 0.6, protocol="prompt_disjoint")])
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
    assert record.predictions == str(path)
    assert pd.read_csv(path).shape == (6, 4)
