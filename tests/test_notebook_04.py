"""Notebook 04 runs with papermill (demo, tiny, fast) and leaves figures, results, a checkpoint."""

from __future__ import annotations

import pytest

from agiqa_lib.evaluation.results import load_results
from notebook_checks import check_clean_run, execute, output_text

# The tiny random MANIQA head (16 -> 1, then ReLU as released) often starts with every score 0;
# with seed 20 (the released seed) or 22 on the fast subset of the 512-image demo it is still
# dead after the 2 epochs (2 of seeds 20-31), and the notebook rightly warns that no epoch has a
# finite val score. These tests check the notebook, not that chance: they use a live seed.
SEEDS = [21]
FIGURES = ["04_lr_schedule", "04_training_curves", "04_gates_released_gate",
           "04_gates_softmax_gate", "04_pred_vs_mos"]


@pytest.mark.slow
def test_notebook_on_demo_tiny_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors: avoid thread contention
    out_dir = tmp_path / "outputs"
    results = tmp_path / "results.jsonl"
    variants = ["maniqa", "released_gate", "softmax_gate"]
    executed = execute("04_moe_fusion_training", tmp_path / "04_executed.ipynb", tmp_path,
                       dataset="demo", profile="tiny", fast=True, variants=variants,
                       seeds=SEEDS, out_dir=str(out_dir), results_path=str(results))
    check_clean_run(executed, out_dir, FIGURES)
    text = output_text(executed)
    assert "tablock1[0]" in text and "c0·n0" in text and "sum of gates" in text  # the inside views
    records = load_results(results)
    assert sorted(set(records["variant"])) == sorted(variants)
    assert set(records["evaluation"]) == {"all_test", "as_released_drop_last"}
    assert set(records["model"]) == {"maniqa", "ma_agiqa"}
    assert (records["profile"] == "tiny").all() and (records["selection"] == "best_on_val").all()
    checkpoint = out_dir / "checkpoints" / "ma_agiqa_demo_tiny.safetensors"
    from agiqa_lib.core.checkpoints import read_metadata

    meta = read_metadata(checkpoint)
    assert meta["agiqa_model"] == "ma_agiqa" and meta["variant"] == "released_gate"


@pytest.mark.slow
def test_notebook_with_maniqa_alone(tmp_path, monkeypatch):
    """No variant fuses the semantic vectors, so none are prepared: the notebook shows MANIQA
    alone where it would show the released gate, and scores with a MANIQA checkpoint."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out_dir = tmp_path / "outputs"
    results = tmp_path / "results.jsonl"
    executed = execute("04_moe_fusion_training", tmp_path / "04_executed.ipynb", tmp_path,
                       dataset="demo", profile="tiny", fast=True, variants=["maniqa"],
                       seeds=SEEDS, out_dir=str(out_dir), results_path=str(results))
    check_clean_run(executed, out_dir, ["04_lr_schedule", "04_training_curves",
                                        "04_pred_vs_mos"])
    text = output_text(executed)
    assert "tablock1[0]" in text and "fusion" not in text.split("c0·n0")[0]
    assert set(load_results(results)["model"]) == {"maniqa"}
    from agiqa_lib.core.checkpoints import read_metadata

    meta = read_metadata(out_dir / "checkpoints" / "ma_agiqa_demo_tiny.safetensors")
    assert meta["variant"] == "maniqa"
