"""Notebook 02 runs with papermill (tiny CLIP, fast settings) and writes figures, results, checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agiqa_lib.evaluation.results import load_results

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_clip_prompt_learning.ipynb"
FIGURES = ["02_quality_bins", "02_learning_curves", "02_results", "02_pred_vs_mos"]


@pytest.mark.slow
def test_notebook_on_demo_with_tiny_clip(tmp_path):
    import papermill

    out_dir, results = tmp_path / "outputs", tmp_path / "results.jsonl"
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "02_executed.ipynb"),
        parameters={"dataset": "demo", "profile": "tiny", "fast": True, "out_dir": str(out_dir),
                    "results_path": str(results)},
        kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    for name in FIGURES:
        figure = out_dir / "figures" / f"{name}.png"
        assert figure.is_file() and figure.stat().st_size > 5000, figure
    records = load_results(results)
    rows = set(zip(records["model"], records["selection"]))
    assert rows == {("zero_shot_clip_iqa", "none"), ("ridge_probe", "none"), ("svr_probe", "none"),
                    *((m, s) for m in ("clip_agiqa", "image_only_control")
                      for s in ("best_on_test", "last", "best_on_val"))}
    assert (records["dataset"] == "demo").all() and (records["profile"] == "tiny").all()
    assert records["srcc"].between(-1, 1).all() and (records["n"] == 120).all()

    from PIL import Image

    from agiqa_lib.scoring import load_scorer

    checkpoint = out_dir / "checkpoints" / "clip_agiqa_demo_tiny.safetensors"
    scores = load_scorer(checkpoint).score_images([Image.new("RGB", (64, 64), (200, 10, 10)),
                                                   Image.new("RGB", (64, 64), (10, 10, 200))])
    assert scores.shape == (2,) and np.isfinite(scores).all()
