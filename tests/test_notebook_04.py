"""Notebook 04 runs with papermill (demo, tiny, fast) and leaves figures, results, a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agiqa_lib.evaluation.results import load_results

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_moe_fusion_training.ipynb"


@pytest.mark.slow
def test_notebook_on_demo_tiny_fast(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors: avoid thread contention
    out_dir = tmp_path / "outputs"
    results = tmp_path / "results.jsonl"
    variants = ["maniqa", "released_gate", "softmax_gate"]
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "04_executed.ipynb"),
        parameters={"dataset": "demo", "profile": "tiny", "fast": True, "variants": variants,
                    "out_dir": str(out_dir), "results_path": str(results)},
        kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    for name in ["04_lr_schedule", "04_training_curves", "04_gates_released_gate",
                 "04_gates_softmax_gate", "04_pred_vs_mos"]:
        figure = out_dir / "figures" / f"{name}.png"
        assert figure.is_file() and figure.stat().st_size > 5000, figure
    records = load_results(results)
    assert sorted(set(records["variant"])) == sorted(variants)
    assert set(records["evaluation"]) == {"all_test", "as_released_drop_last"}
    assert set(records["model"]) == {"maniqa", "ma_agiqa"}
    assert (records["profile"] == "tiny").all() and (records["selection"] == "best_on_val").all()
    checkpoint = out_dir / "checkpoints" / "ma_agiqa_demo_tiny.safetensors"
    from agiqa_lib.core.checkpoints import read_metadata

    meta = read_metadata(checkpoint)
    assert meta["agiqa_model"] == "ma_agiqa" and meta["variant"] == "released_gate"
