"""Images/s of feature extraction (and optionally MA-AGIQA training) on 1 vs N processes, one run.

Each process count runs the real entry point in a fresh cache: `python -m agiqa_lib.cli extract`
for 1 process, `torchrun --standalone --nproc_per_node N -m agiqa_lib.cli extract` for N (each
rank computes the shards i with i % N == rank; `agiqa_lib.core.distributed`). The extraction
rate is the one the command records in the cache manifest: images of all ranks over the
slowest rank's fill time (reading, transform, forward, writing shards; the models' start-up is
not in it, the wall time beside it includes everything). The table ends with the ratio to one
process.

`--train` adds MA-AGIQA data-parallel training (frozen-backbone tokens, synthetic, the
profile's MANIQA + released gate, batch 8 as released, dropout as released): train images/s of
one epoch per process count, measured inside the run (the launched processes run this file in
worker mode).

CPU (this project's machine): `--threads-per-process` defaults to the cores divided by the
process count, so every row uses the same cores (1 process x 2 threads vs 2 x 1 on 2 cores).
On a GPU node the same script runs one process per GPU:

    python benchmarks/bench_scaling.py --profile lite --n 128                    # CPU, 1 vs 2
    python benchmarks/bench_scaling.py --profile lite --n 128 --train
    python benchmarks/bench_scaling.py --profile full --what iqa --device cuda --processes 1 2 4 8 --n 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            folder / f"synthetic_{i:05d}.jpg", quality=90)


def command(processes: int, target: list[str]) -> list[str]:
    if processes == 1:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(processes), *target]


def environment(cache: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "AGIQA_CACHE_DIR": str(cache), "AGIQA_PROGRESS": "off",
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout, wall


def extraction(args, processes: int, images: Path, work: Path) -> dict:
    cache = work / f"cache_p{processes}"
    shard = args.shard_size or max(1, args.n // (4 * max(args.processes)))
    cli = ["-m", "agiqa_lib.cli", "extract", "folder", "--root", str(images), "--profile",
           args.profile, "--what", args.what, "--device", args.device, "--batch-size",
           str(args.batch_size), "--shard-size", str(shard), "--no-verify"]
    _, wall = run(command(processes, cli), environment(cache, threads(args, processes)))
    (manifest,) = (cache / "features").glob("*/manifest.json")
    info = json.loads(manifest.read_text())["info"]["extraction"]
    return {"images": info["images_computed"], "seconds": info["seconds"],
            "images_per_s": info["images_computed"] / info["seconds"], "wall_s": wall}


def training(args, processes: int, work: Path) -> dict:
    out = work / f"train_p{processes}.json"
    worker = [str(Path(__file__).resolve()), "--worker-train", str(out), "--profile",
              args.profile, "--device", args.device, "--n-train", str(args.n_train)]
    _, wall = run(command(processes, worker), environment(work / "train_cache",
                                                          threads(args, processes)))
    return {**json.loads(out.read_text()), "wall_s": wall}


def threads(args, processes: int) -> int | None:
    if args.device != "cpu":
        return None
    return args.threads_per_process or max(1, (os.cpu_count() or 1) // processes)


def train_worker(out: Path, profile: str, device: str, n_train: int) -> None:
    """One MA-AGIQA epoch on synthetic frozen-backbone tokens (every rank; rank 0 reports)."""
    import numpy as np
    import pandas as pd
    import torch

    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
    from agiqa_lib.core import distributed
    from agiqa_lib.ma_agiqa.config import train_config
    from agiqa_lib.ma_agiqa.data import PreparedData
    from agiqa_lib.ma_agiqa.model import ma_agiqa_config
    from agiqa_lib.ma_agiqa.train import new_model, train_run

    group = distributed.current(device)
    channels = create_iqa_backbone(profile, pretrained=False).out_channels
    grid = ma_agiqa_config(profile, "maniqa", channels).maniqa.grid
    n = n_train + 16 + 16
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(n, channels, grid * grid, generator=g).half()
    semantic = torch.randn(n, 2, 384 if profile == "lite" else 64, generator=g)
    df = pd.DataFrame({"name": [f"{i}.jpg" for i in range(n)], "path": "",
                       "mos": np.linspace(0, 5, n), "generator": ["g"] * n})
    split = pd.Series(["train"] * n_train + ["val"] * 16 + ["test"] * 16)
    data = PreparedData("bench", profile, "fixed", df, split, tokens, semantic,
                        in_channels=channels)
    model = new_model(data, "released_gate", 20, backbone_pretrained=False)
    cfg = train_config(profile, epochs=1, device=str(group.device_for(device)))
    start = time.perf_counter()
    train_run(model, data, cfg, progress=False)
    seconds = time.perf_counter() - start
    used = n_train // cfg.batch_size * cfg.batch_size
    if group.is_main:
        out.write_text(json.dumps({"images": used, "seconds": seconds,
                                   "images_per_s": used / seconds}))
    distributed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="lite", choices=("full", "lite", "tiny"))
    parser.add_argument("--what", default="clip", choices=("clip", "iqa"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=128, help="images to extract")
    parser.add_argument("--side", type=int, default=384, help="synthetic image side (px)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=None,
                        help="default: n / (4 x the largest process count)")
    parser.add_argument("--threads-per-process", type=int, default=None,
                        help="CPU: torch threads per process (default cores / processes)")
    parser.add_argument("--train", action="store_true", help="also time MA-AGIQA training")
    parser.add_argument("--n-train", type=int, default=256, help="training images (--train)")
    parser.add_argument("--worker-train", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_train:
        train_worker(Path(args.worker_train), args.profile, args.device, args.n_train)
        return
    if 1 not in args.processes:
        args.processes = [1, *args.processes]
    print(f"profile {args.profile}, {args.what} features, device {args.device}, {args.n} "
          f"synthetic {args.side}x{args.side} JPEGs, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        work = Path(tmp)
        write_images(work / "images", args.n, args.side)
        rows = []
        for processes in args.processes:
            row = {"processes": processes, "threads": threads(args, processes)}
            row["extract"] = extraction(args, processes, work / "images", work)
            if args.train:
                row["train"] = training(args, processes, work)
            rows.append(row)
            print(f"  {processes} process(es) done", flush=True)
    base = rows[0]
    print()
    print("| processes | threads/process | what | images | seconds | images/s | ratio to 1 | "
          "wall s (incl. start-up) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for what in ("extract", "train"):
            if what not in row:
                continue
            r = row[what]
            ratio = r["images_per_s"] / base[what]["images_per_s"]
            label = "extraction" if what == "extract" else "MA-AGIQA training (1 epoch)"
            print(f"| {row['processes']} | {row['threads'] or '-'} | {label} | {r['images']} | "
                  f"{r['seconds']:.1f} | {r['images_per_s']:.2f} | {ratio:.2f}x | "
                  f"{r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
