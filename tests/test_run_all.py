"""run_all.sh: runs the notebooks in order with papermill and names the one that fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_checks import figure_count, warning_lines

REPO = Path(__file__).resolve().parents[1]


def run_all(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGIQA_PYTHON": sys.executable}
    return subprocess.run([str(REPO / "run_all.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


def test_help_lists_options(tmp_path):
    proc = run_all("--help", tmp_path=tmp_path)
    assert proc.returncode == 0
    for option in ("--dataset", "--root", "--profile", "--out", "--fast", "--only", "--param",
                   "--device", "--publish", "--publish-to", "--also-protocol"):
        assert option in proc.stdout


def test_unknown_option_is_refused(tmp_path):
    proc = run_all("--epochs", "3", tmp_path=tmp_path)
    assert proc.returncode == 2 and "unknown option --epochs" in proc.stderr


@pytest.mark.slow
def test_fast_demo_run_of_01_and_05_writes_and_publishes_notebooks(tmp_path):
    out, published = tmp_path / "out", tmp_path / "published"
    proc = run_all("--fast", "--only", "01", "--only", "05", "--out", str(out),
                   "--publish-to", str(published), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = ["01_data_exploration.ipynb", "05_results.ipynb"]
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == names
    assert (out / "figures" / "01_generator_mean_baseline.png").is_file()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"generator_mean"}
    assert {r["dataset"] for r in records} == {"demo"}
    for name in names:  # a clean run: no warnings in the executed notebooks
        assert warning_lines(nbformat.read(out / "notebooks" / name, as_version=4)) == []
    for name, other in zip(names, names[::-1]):  # one process ran both: each log is its own
        log = (out / "logs" / name).with_suffix(".log").read_text()
        assert "Input Notebook:" in log and name in log and other not in log

    reference = published / "notebooks" / "reference" / "demo_lite"
    assert sorted(p.name for p in reference.iterdir()) == names
    for name in names:
        path = reference / name
        text = path.read_text()
        assert path.stat().st_size < 1_000_000
        assert str(tmp_path) not in text and str(REPO) not in text and "<out>" in text
        notebook = nbformat.read(path, as_version=4)
        assert "jupytext" not in notebook.metadata  # not paired: opening it writes no .py
        assert set(notebook.metadata.get("papermill", {})) <= {"parameters"}
        assert all("papermill" not in c.metadata and "execution" not in c.metadata
                   for c in notebook.cells)
    assert figure_count(nbformat.read(reference / names[0], as_version=4)) == 5
    figure = published / "figures" / "01_best_worst.png"
    assert 0 < figure.stat().st_size < (out / "figures" / "01_best_worst.png").stat().st_size


@pytest.mark.slow
def test_failing_notebook_is_named_and_stops_the_run(tmp_path):
    empty_root = tmp_path / "not-a-dataset"
    empty_root.mkdir()
    out = tmp_path / "out"
    proc = run_all("--dataset", "agiqa3k", "--root", str(empty_root), "--out", str(out),
                   "--only", "01", "--only", "05", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "FAILED: 01_data_exploration" in proc.stderr
    assert "(cell \"In [" in proc.stderr
    assert "data.csv" in proc.stderr  # the loader's one clear error reaches the user
    assert not (out / "notebooks" / "05_results.ipynb").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_real_agiqa3k_subset_runs_end_to_end(agiqa3k_root, tmp_path):
    """CI smoke check on real data: every prompt of 12 prompts (all generators), notebooks
    01-05 with the tiny profile and fast settings, CLIP-AGIQA and MA-AGIQA trained once more
    on the prompt-disjoint split (`--also-protocol`) for notebook 05, then `agiqa score` on
    the checkpoint."""
    import pandas as pd

    scores = pd.read_csv(agiqa3k_root / "data.csv")
    prompts = scores["prompt"].drop_duplicates().head(12)
    subset = scores[scores["prompt"].isin(prompts)]
    root = tmp_path / "agiqa3k-subset"
    (root / "images").mkdir(parents=True)
    subset.to_csv(root / "data.csv", index=False)
    images = agiqa3k_root / "images"
    for name in subset["name"]:
        (root / "images" / name).symlink_to(images / name)
    out = tmp_path / "out"
    proc = run_all("--dataset", "agiqa3k", "--root", str(root), "--profile", "tiny", "--fast",
                   "--param", "04:variants=[maniqa, released_gate]", "--out", str(out),
                   "--also-protocol", "prompt_disjoint", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((out / "notebooks").glob("0[1-5]_*.ipynb"))) == 5
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {"generator_mean", "clip_agiqa", "ma_agiqa", "maniqa"} <= {r["model"] for r in records}
    assert all(r["dataset"] == "agiqa3k" and r["n"] > 0 for r in records)
    trained = {(r["model"], r["protocol"]) for r in records if r["model"] != "generator_mean"}
    for model in ("clip_agiqa", "ma_agiqa", "maniqa"):  # each model on both splits
        assert {(model, "clip_agiqa" if model == "clip_agiqa" else "ma_agiqa"),
                (model, "prompt_disjoint")} <= trained, sorted(trained)
    for name in ("train-clip", "train-ma"):
        assert f"launch {name}_prompt_disjoint on 1 process(es)" in proc.stdout
        assert (out / "logs" / f"launch_{name}_prompt_disjoint.log").is_file()
    summary = nbformat.read(out / "notebooks" / "05_results.ipynb", as_version=4)
    assert "prompt_disjoint" in json.dumps([c.get("outputs", []) for c in summary.cells])

    checkpoint = next((out / "checkpoints").glob("clip_agiqa_*.safetensors"))
    csv = tmp_path / "scores.csv"
    done = subprocess.run([sys.executable, "-m", "agiqa_lib.cli", "score", "--checkpoint",
                           str(checkpoint), str(root / "images"), "-o", str(csv)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(csv)) == len(subset)
