"""Images/s of the folded frozen encoders that feature extraction runs, per batch size, one run.

On a CPU small batches are faster: each layer's activations of a few images stay in the
caches, while a batch of 32 at 224 px (or 16 at 512 px) streams them through memory. The
script encodes the same random images at each batch size and prints the throughput, its
ratio to the old default and the largest difference from the old default's output (the
per-image results do not depend on the batch here: 0.0 on this project's CPU).

    python benchmarks/bench_batch_size.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import torch

from agiqa_lib.backbones.clip import create_clip
from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
from agiqa_lib.core.folding import fold_batchnorm
from agiqa_lib.ma_agiqa.model import MAAGIQA, ma_agiqa_config

SIZES = (1, 2, 4, 8, 16, 32)


def throughput(encode, images: torch.Tensor, batch_size: int) -> tuple[float, torch.Tensor]:
    """Images/s encoding `images` in batches of `batch_size` (after one warm-up batch)."""
    encode(images[:batch_size])
    start = time.perf_counter()
    out = torch.cat([encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    return len(images) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every batch size this often, in turn; keep the best")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = create_iqa_backbone("lite")
    probe = MAAGIQA(ma_agiqa_config("lite", "maniqa", backbone.out_channels),
                    fold_batchnorm(backbone)).eval()
    encoders = [  # (name, encode, image side, the batch size extraction used before)
        ("lite CLIP encode_image", fold_batchnorm(create_clip("lite").model.visual), 224, 32),
        ("lite IQA tokens, demo side", probe.tokens, 256, 16),
        ("lite IQA tokens, AGIQA-3K side", probe.tokens, 512, 16),
    ]
    print(f"{torch.get_num_threads()} threads, {args.n} random images per measurement (32 at "
          f"512 px), best of {args.rounds} rounds")
    print("| encoder | side | " + " | ".join(f"batch {b}" for b in SIZES)
          + " | best vs old default | max diff |")
    print("|---|---|" + "---|" * len(SIZES) + "---|---|")
    with torch.inference_mode():
        for name, encode, side, old in encoders:
            n = args.n if side < 512 else max(32, args.n // 2)
            images = torch.randn(n, 3, side, side)
            rates, outs = {}, {}
            for _ in range(args.rounds):  # every size once per round; the best round counts
                for size in SIZES:
                    rate, outs[size] = throughput(encode, images, size)
                    rates[size] = max(rate, rates.get(size, 0.0))
            best = max(rates, key=rates.get)
            diff = max((outs[s] - outs[old]).abs().max().item() for s in SIZES)
            print(f"| {name} | {side} | " + " | ".join(f"{rates[s]:.1f}" for s in SIZES)
                  + f" | batch {best}: {rates[best] / rates[old]:.2f}x vs batch {old}"
                  f" | {diff:.1e} |")


if __name__ == "__main__":
    main()
