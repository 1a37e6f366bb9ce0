"""Notebook 03 runs end to end on the demo data (tiny random mPLUG-Owl2, fast mode) via papermill."""

from __future__ import annotations

import json

import pytest

from agiqa_lib.evaluation.results import load_results
from agiqa_lib.viz.semantic import title_note
from notebook_checks import check_clean_run, execute, output_text, warning_lines

FIGURES = ("03_token_layout", "03_pca_mos", "03_question_similarity", "03_pca_generator")


@pytest.mark.slow
def test_notebook_03_on_demo_with_tiny_mplug_owl2(tmp_path, request):
    root = request.config.rootpath
    out, results = tmp_path / "out", tmp_path / "results.jsonl"
    executed = execute("03_mllm_semantic_extraction", tmp_path / "03.ipynb", root,
                       dataset="demo", profile="tiny", fast=True, out_dir=str(out),
                       results_path=str(results))
    check_clean_run(executed, out, list(FIGURES), min_bytes=10_000)
    summary = json.loads((out / "03_semantic_summary.json").read_text())
    assert summary["profile"] == "tiny" and summary["is_stand_in"] is False
    assert summary["shape"] == [summary["n"], 2, summary["dim"]] and summary["n"] >= 16
    assert -1.0 <= summary["question_cosine_min"] <= summary["question_cosine_median"] <= 1.0
    text = output_text(executed)
    assert "USER: {question}\\n<|image|> ASSISTANT:" in text  # the prompt, image after the text
    assert "65 image tokens" in text  # mPLUG-Owl2's visual abstractor output, spliced in
    records = load_results(results)  # the zero-shot Q-Align baseline (random tiny weights)
    assert set(records["model"]) == {"q_align"} and (records["profile"] == "tiny").all()
    assert "all_images" in set(records["evaluation"])


@pytest.mark.slow
def test_notebook_03_skips_q_align_for_the_lite_stand_in(tmp_path, request):
    root = request.config.rootpath
    executed = execute("03_mllm_semantic_extraction", tmp_path / "03.ipynb", root,
                       dataset="demo", profile="lite", fast=True, out_dir=str(tmp_path / "out"),
                       results_path=str(tmp_path / "results.jsonl"))
    assert warning_lines(executed) == []
    text = output_text(executed)
    assert "STAND-IN" in text and "Q-Align needs the full or tiny mPLUG-Owl2" in text
    assert not (tmp_path / "results.jsonl").exists()


def test_stand_in_figures_say_so():
    assert "STAND-IN" in title_note(True, "lite:x") and "not an MLLM" in title_note(True, "lite:x")
    assert "STAND-IN" not in title_note(False, "hf:llava-hf/llava-1.5-7b-hf")
