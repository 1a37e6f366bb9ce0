"""Notebook 02 runs with papermill (tiny CLIP, fast settings, the lite recipe with the released
one beside it) and writes figures, results, checkpoint."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agiqa_lib.evaluation.results import load_results
from notebook_checks import check_clean_run, execute, output_text

FIGURES = ["02_quality_bins", "02_learning_curves", "02_results", "02_pred_vs_mos"]


@pytest.mark.slow
def test_notebook_on_demo_with_tiny_clip(tmp_path):
    out_dir, results = tmp_path / "outputs", tmp_path / "results.jsonl"
    executed = execute("02_clip_prompt_learning", tmp_path / "02_executed.ipynb", tmp_path,
                       dataset="demo", profile="tiny", recipe="lite", epochs=1, fast=True,
                       out_dir=str(out_dir), results_path=str(results))
    check_clean_run(executed, out_dir, FIGURES)
    text = output_text(executed)
    assert "context vector 15 (learned)" in text and "[6, 20, 32]" in text  # prompt anatomy
    folded = float(re.search(r"folded MLP\(x\)\| over \d+ test images: (\S+)", text).group(1))
    assert folded < 1e-5  # the prompts fold into the first bias
    # one summary line per loop (the released recipe's two fast epochs)
    assert re.search(r"train CLIP-AGIQA \(train\): 2/2 epochs in", text)
    assert "clip_agiqa (released recipe)" in text
    records = load_results(results)
    rows = set(zip(records["model"], records["selection"]))
    assert rows == {("zero_shot_clip_iqa", "none"), ("ridge_probe", "none"), ("svr_probe", "none"),
                    *((m, s) for m in ("clip_agiqa", "image_only_control")
                      for s in ("best_on_test", "last", "best_on_val"))}
    assert len(records) == 11  # + the released recipe's best_on_test and last
    released = records[records["feature_scale"].fillna(1.0) == 1.0]
    assert set(released.loc[released["model"] == "clip_agiqa", "selection"]) == {"best_on_test", "last"}
    assert (records["dataset"] == "demo").all() and (records["profile"] == "tiny").all()
    # fast: 96 of the 512 demo images, evenly spread; the clip_agiqa split tests 20 of them
    assert records["srcc"].between(-1, 1).all() and (records["n"] == 20).all()

    from PIL import Image

    from agiqa_lib.scoring import load_scorer

    checkpoint = out_dir / "checkpoints" / "clip_agiqa_demo_tiny_scale22.6_text1.safetensors"
    scores = load_scorer(checkpoint).score_images([Image.new("RGB", (64, 64), (200, 10, 10)),
                                                   Image.new("RGB", (64, 64), (10, 10, 200))])
    assert scores.shape == (2,) and np.isfinite(scores).all()
