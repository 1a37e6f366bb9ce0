"""Notebook 05 turns a results file (with per-image predictions) into tables and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agiqa_lib.evaluation.results import ResultRecord, add_records, save_predictions
from notebook_checks import check_clean_run, execute


def _results(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "results.jsonl"
    mos = rng.uniform(0, 5, 60)
    for variant, protocol, noise in [("released_gate", "ma_agiqa", 0.3),
                                     ("softmax_gate", "ma_agiqa", 0.5),
                                     ("released_gate", "prompt_disjoint", 0.8)]:
        record = ResultRecord(model="ma_agiqa", variant=variant, dataset="demo",
                              protocol=protocol, seed=20, profile="tiny",
                              selection="best_on_val", evaluation="all_test",
                              srcc=0.9 - noise / 2, plcc_raw=0.88, plcc_logistic=0.9, krcc=0.7,
                              rmse_logistic=0.4, n=60)
        preds = pd.DataFrame({"name": [f"im{i}" for i in range(60)],
                              "generator": [f"g{i % 3}" for i in range(60)], "mos": mos,
                              "pred": mos + rng.normal(0, noise, 60)})
        save_predictions(preds, record, tmp_path)
        add_records([record], path)
    return path


@pytest.mark.slow
def test_notebook_05_draws_every_section(tmp_path):
    results = _results(tmp_path)
    out_dir = tmp_path / "out"
    executed = execute("05_results", tmp_path / "05.ipynb", tmp_path,
                       results_path=str(results), out_dir=str(out_dir))
    check_clean_run(executed, out_dir, ["05_pred_vs_mos", "05_generator_error", "05_ablations"])
