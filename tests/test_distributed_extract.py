"""Data-parallel extraction: 2 CPU processes (gloo) through the CLI entry points give the
single-process cache byte for byte; a killed rank's finished shards are kept on resume.

The launched runs are subprocesses: `torchrun --standalone --nproc_per_node 2 -m agiqa_lib.cli
extract ...`, `accelerate launch --multi_gpu --num_processes 2 -m agiqa_lib.cli semantic
extract ...` (on a CPU-only machine `--multi_gpu` only picks accelerate's torchrun-based
launcher; `--device cpu` makes the processes use gloo), and this file run by torchrun as a
script (below `__main__`) to kill a rank half-way. The single-process references run in this
process with one torch thread, as the launched processes do (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agiqa_lib.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES, SHARD = 14, 4  # 4 shards (the last one short): 2 per rank


@pytest.fixture
def images(tmp_path):
    """Fourteen small JPEGs in a folder dataset."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], cache: Path, launcher: str = "torchrun", script: str | None = None,
           check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `agiqa <command>` (or `script <command>`) on 2 CPU processes; its own cache."""
    target = [script] if script else ["-m", "agiqa_lib.cli"]
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", *target, *command]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               *target, *command]
    env = {**os.environ, "AGIQA_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",
           "AGIQA_PROGRESS": "off", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **(extra_env or {})}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    if check and done.returncode != 0:
        raise AssertionError(f"launch failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-5000:]}")
    return done


def entries(cache: Path, kind: str = "features") -> dict[str, Path]:
    return {p.name: p for p in sorted((cache / kind).iterdir()) if p.is_dir()}


def assert_same_store(single: Path, launched: Path) -> None:
    """Same identity, layout, shard records (checksums) and shard bytes; no fragments left."""
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (single, launched))
    assert b["complete"] and not list(launched.glob("manifest.rank*.json"))
    for key in ("identity", "shard_size", "item_shape", "shards", "complete"):
        assert a[key] == b[key], key
    files = sorted(p.name for p in single.glob("shard_*.safetensors"))
    assert files == sorted(p.name for p in launched.glob("shard_*.safetensors"))
    for name in files:
        assert (single / name).read_bytes() == (launched / name).read_bytes(), name


def extract_single_process(args: list[str], cache: Path, monkeypatch, capsys) -> None:
    """`agiqa <args>` in this process, into the cache folder `cache` (the reference)."""
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(cache))
    assert main(args) == 0
    capsys.readouterr()


def test_launched_extraction_equals_single_process(images, tmp_path, monkeypatch, capsys):
    args = ["extract", "folder", "--root", str(images), "--profile", "tiny", "--views", "test,1",
            "--shard-size", str(SHARD), "--batch-size", "3"]
    single = tmp_path / "single"
    extract_single_process(args, single, monkeypatch, capsys)
    launched = tmp_path / "launched"
    out = launch(args, launched).stdout
    lines = [line for line in out.splitlines() if line.startswith("clip ")]
    assert [line.split(":")[0] for line in lines] == ["clip test", "clip aug0"]  # rank 0 only
    assert all(re.search(r"14 images in .* on 2 processes", line) for line in lines)
    ref, got = entries(single), entries(launched)
    assert sorted(ref) == sorted(got) and len(ref) == 2
    for name in ref:
        assert_same_store(ref[name], got[name])
        info = json.loads((got[name] / "manifest.json").read_text())["info"]["extraction"]
        assert info["images_computed"] == N_IMAGES and info["processes"] == 2


def test_killed_rank_keeps_its_shards_and_resume_recomputes_only_missing(images, tmp_path,
                                                                          monkeypatch, capsys):
    args = ["extract", "folder", "--root", str(images), "--profile", "tiny", "--what", "iqa",
            "--shard-size", str(SHARD), "--batch-size", "2"]
    single = tmp_path / "single"
    extract_single_process(args, single, monkeypatch, capsys)
    launched = tmp_path / "launched"
    # rank 1 dies right after recording its first shard (shard 1); rank 0 is stopped with it
    crashed = launch(["crash-after-first-shard", *args], launched, script=__file__, check=False)
    assert crashed.returncode != 0
    (entry,) = entries(launched).values()
    fragments = {p.name: json.loads(p.read_text()) for p in entry.glob("manifest.rank*.json")}
    assert "1" in fragments["manifest.rank00001.json"]["shards"]  # the killed rank's shard
    recorded = {int(k) for f in fragments.values() for k in f["shards"]}
    kept_rows = sum(min(N_IMAGES, (i + 1) * SHARD) - i * SHARD for i in recorded)
    # resume (here in one process; a launched run merges the same way): only missing shards
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(launched))
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"({N_IMAGES - kept_rows} images in" in out, out
    assert_same_store(entries(single)[entry.name], entry)


def test_launched_semantic_extraction_with_accelerate_equals_single_process(images, tmp_path,
                                                                            monkeypatch, capsys):
    args = ["semantic", "extract", "folder", "--root", str(images), "--profile", "tiny",
            "--shard-size", str(SHARD), "--batch-size", "3"]
    single = tmp_path / "single"
    extract_single_process(args, single, monkeypatch, capsys)
    launched = tmp_path / "launched"
    out = launch([*args, "--device", "cpu"], launched, launcher="accelerate").stdout
    assert out.count("semantic vectors (14, 2,") == 1 and "2 processes" in out, out
    ref, got = entries(single, "semantic"), entries(launched, "semantic")
    assert sorted(ref) == sorted(got) and len(ref) == 1
    for name in ref:
        assert_same_store(ref[name], got[name])


def _crash_after_first_shard(argv: list[str]) -> int:
    """Run `agiqa argv` with rank 1 exiting right after it records its first shard."""
    from agiqa_lib.core import cache, distributed

    write_shard = cache.FeatureStore.write_shard

    def dying(self, index, features):
        write_shard(self, index, features)
        if distributed.current().rank == 1:
            os._exit(17)

    cache.FeatureStore.write_shard = dying
    return main(argv)


if __name__ == "__main__":  # launched by the tests above through torchrun
    mode, *rest = sys.argv[1:]
    if mode == "crash-after-first-shard":
        sys.exit(_crash_after_first_shard(rest))
    raise SystemExit(f"unknown mode {mode}")
