"""The training commands launched on 2 CPU processes (gloo): `torchrun -m agiqa_lib.cli
train-ma|train-clip` on the tiny profile and the demo dataset run end to end, print once,
write each result record, each test prediction and the checkpoint once (rank 0), and a second
launch resumes the finished training states instead of training again.

Marked slow (about 3 minutes on this project's 2-core CPU): the equivalence with one process
is tested in `test_distributed_training.py` and `test_distributed_extract.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def launch(command: list[str]) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "agiqa_lib.cli", *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AGIQA_PROGRESS": "off"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def demo():
    from agiqa_lib.data.datasets import load_dataset

    return load_dataset("demo")  # generated once, before the ranks read it


@pytest.mark.parametrize("command, model", [
    (["train-ma", "--variants", "released_gate", "--epochs", "1"], "ma_agiqa"),
    (["train-clip", "--epochs", "1", "--n-boot", "50"], "clip_agiqa"),
])
def test_launched_training_command_writes_once_and_resumes(demo, tmp_path, command, model):
    out = tmp_path / "out"
    args = [command[0], "demo", "--profile", "tiny", "--fast", "--out-dir", str(out),
            "--results", str(out / "results.jsonl"), *command[1:]]
    first = launch(args)
    assert first.count("checkpoint: ") == 1 and "launched: 2 processes (CPU, gloo)" in first
    checkpoints = list((out / "checkpoints").glob("*.safetensors"))
    assert len(checkpoints) == 1
    recs = records(out / "results.jsonl")
    keys = [(r["model"], r.get("variant"), r["selection"], r.get("evaluation")) for r in recs]
    assert len(keys) == len(set(keys)) and any(r["model"] == model for r in recs)
    trained = [r for r in recs if r["model"] == model]
    n_test = {r["n"] for r in trained if r.get("evaluation") != "as_released_drop_last"}
    predictions = list((out / "predictions").glob(f"{model}*"))
    assert predictions
    for file in predictions:
        frame = pd.read_csv(file) if file.suffix == ".csv" else pd.read_parquet(file)
        assert frame["name"].is_unique and {len(frame)} == n_test  # every test image once
    states = sorted(out.rglob("last.safetensors")) + sorted(
        (out / "checkpoints").rglob("train*.safetensors"))
    assert states
    stamps = {p: p.stat().st_mtime_ns for p in states}
    second = launch(args)  # resumes the finished states: same numbers, no new training
    assert {p: p.stat().st_mtime_ns for p in states} == stamps
    again = records(out / "results.jsonl")
    assert len(again) == len(recs)
    srcc = {k: r["srcc"] for k, r in zip(keys, recs)}
    for r in again:
        key = (r["model"], r.get("variant"), r["selection"], r.get("evaluation"))
        if r["model"] == model:
            assert r["srcc"] == pytest.approx(srcc[key], abs=1e-9)
    assert second.count("checkpoint: ") == 1
