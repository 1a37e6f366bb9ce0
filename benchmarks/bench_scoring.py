"""`agiqa score` on a CPU: the `lite` scorers with the model fed a few images at a time (as
now: `core.features.auto_batch_size`, 4 at 224 px, 1 at 512 px) vs the whole read batch at
once (as before), alternating, in one process, on the same images.

Models have random heads (the speed does not depend on training): CLIP-AGIQA `lite` (224 px)
and MA-AGIQA `lite` released gate at `--image-size` (512: AGIQA-3K's side) with the stand-in
semantic encoder. Images: `--root` (a folder, e.g. ../shared/data/AGIQA-3K/images), else the
demo's.

    python benchmarks/bench_scoring.py --root ../shared/data/AGIQA-3K/images --n 48 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

import agiqa_lib.core.features as features
from agiqa_lib.core.io import find_images, open_rgb


def scorers(image_size: int) -> dict:
    """The two `lite` scorers with seeded random heads."""
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
    from agiqa_lib.backbones.mllm import create_mllm
    from agiqa_lib.clip_agiqa.model import ClipAgiqaScorer, create_clip_agiqa
    from agiqa_lib.ma_agiqa.model import MAAGIQA, MAAGIQAScorer, ma_agiqa_config

    torch.manual_seed(0)
    clip = ClipAgiqaScorer(create_clip_agiqa("lite").eval())
    backbone = create_iqa_backbone("lite", pretrained=True)
    encoder = create_mllm("lite")
    cfg = ma_agiqa_config("lite", "released_gate", backbone.out_channels,
                          semantic_dim=encoder.dim, image_size=image_size)
    ma = MAAGIQAScorer(MAAGIQA(cfg, backbone), encoder)
    return {"CLIP-AGIQA lite (224 px, read batch 16)": (clip, 16),
            f"MA-AGIQA lite ({image_size} px, batch 8)": (ma, 8)}


def timed(scorer, images: list, read_batch: int, whole: bool) -> tuple[float, np.ndarray]:
    """Seconds to score `images` in read batches; `whole`: the model takes each batch at once."""
    own = features.auto_batch_size
    if whole:  # the behaviour before: the model gets the whole batch
        features.auto_batch_size = lambda batch_size, device, accelerator, side=256: accelerator
    try:
        start = time.perf_counter()
        scores = np.concatenate([scorer.score_images(images[i:i + read_batch])
                                 for i in range(0, len(images), read_batch)])
        return time.perf_counter() - start, scores
    finally:
        features.auto_batch_size = own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder of images (default: the demo's)")
    parser.add_argument("--n", type=int, default=48, help="images scored per arm and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.root is None:
        from agiqa_lib.data.datasets import load_dataset

        paths = list(load_dataset("demo")["path"])
    else:
        paths = find_images(args.root)
    images = [open_rgb(p) for p in paths[:args.n]]
    print(f"{len(images)} images, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("| scorer | whole batch (before) img/s | CPU-sized chunks (now) img/s | ratio | "
          "max score diff |")
    print("|---|---|---|---|---|")
    for name, (scorer, read_batch) in scorers(args.image_size).items():
        timed(scorer, images[:read_batch], read_batch, whole=False)  # warm-up
        before, after, diff = [], [], 0.0
        for _ in range(args.rounds):
            seconds, old = timed(scorer, images, read_batch, whole=True)
            before.append(len(images) / seconds)
            seconds, new = timed(scorer, images, read_batch, whole=False)
            after.append(len(images) / seconds)
            diff = max(diff, float(np.abs(old - new).max()))
        b, a = np.mean(before), np.mean(after)
        print(f"| {name} | {b:.1f} | {a:.1f} | {a / b:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
