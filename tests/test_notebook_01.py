"""Notebook 01 runs with papermill on the demo and on real AGIQA-3K and writes its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agiqa_lib.evaluation.results import load_results
from notebook_checks import check_clean_run, execute

FIGURES = ["01_score_distributions", "01_generator_boxplots", "01_quality_vs_alignment",
           "01_best_worst", "01_generator_mean_baseline"]


def run_notebook(tmp_path: Path, **parameters) -> Path:
    out_dir = tmp_path / "outputs"
    executed = execute("01_data_exploration", tmp_path / "01_executed.ipynb", tmp_path,
                       out_dir=str(out_dir), **parameters)
    check_clean_run(executed, out_dir, FIGURES)  # saved, shown inline, no warnings
    return out_dir


@pytest.mark.slow
def test_notebook_on_demo(tmp_path):
    results = tmp_path / "results.jsonl"
    run_notebook(tmp_path, dataset="demo", fast=True, results_path=str(results))
    records = load_results(results)
    assert set(records["model"]) == {"generator_mean"}
    assert set(records["protocol"]) == {"ma_agiqa", "clip_agiqa", "prompt_disjoint",
                                        "prompt_disjoint_k5_f0"}
    assert (records["dataset"] == "demo").all()


@pytest.mark.slow
@pytest.mark.real_data
def test_notebook_on_real_agiqa3k(agiqa3k_root, tmp_path):
    results = tmp_path / "results.jsonl"
    run_notebook(tmp_path, dataset="agiqa3k", root=str(agiqa3k_root), fast=True,
                 results_path=str(results))
    ma = load_results(results).set_index("protocol").loc["ma_agiqa"]
    assert ma["n"] == 597
    assert ma["srcc"] == pytest.approx(0.73, abs=0.01)  # see test_baselines for the tolerance
