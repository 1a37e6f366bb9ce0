"""Notebook 03 runs end to end on the demo data (tiny random VLM, fast mode) via papermill."""

from __future__ import annotations

import json

import nbformat
import pytest

from agiqa_lib.viz.semantic import title_note

papermill = pytest.importorskip("papermill")

NOTEBOOK = "notebooks/03_mllm_semantic_extraction.ipynb"


def test_notebook_03_on_demo_with_tiny_vlm(tmp_path, request):
    root = request.config.rootpath
    out = tmp_path / "out"
    papermill.execute_notebook(str(root / NOTEBOOK), str(tmp_path / "03.ipynb"),
                               parameters={"dataset": "demo", "profile": "tiny", "fast": True,
                                           "out_dir": str(out)},
                               kernel_name="python3", cwd=str(root), progress_bar=False)
    for name in ("03_pca_mos", "03_pca_generator", "03_question_similarity"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    summary = json.loads((out / "03_semantic_summary.json").read_text())
    assert summary["profile"] == "tiny" and summary["is_stand_in"] is False
    assert summary["shape"] == [summary["n"], 2, summary["dim"]] and summary["n"] >= 16
    assert -1.0 <= summary["question_cosine_min"] <= summary["question_cosine_median"] <= 1.0
    executed = nbformat.read(tmp_path / "03.ipynb", as_version=4)
    text = "\n".join(str(o.get("text", "")) for c in executed.cells for o in c.get("outputs", []))
    assert "USER: {question}\\n<|image|> ASSISTANT:" in text  # the prompt, image after the text


def test_stand_in_figures_say_so():
    assert "STAND-IN" in title_note(True, "lite:x") and "not an MLLM" in title_note(True, "lite:x")
    assert "STAND-IN" not in title_note(False, "hf:llava-hf/llava-1.5-7b-hf")
