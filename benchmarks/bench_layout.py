"""Lite0 forward passes in the default (contiguous) memory format, in channels_last, and in
channels_last with the batch norms folded into the convolutions (`core.folding`, what feature
extraction runs), measured in one run: the lite CLIP image tower, the lite IQA backbone tokens
and the stand-in semantic encoder's pooled features, each on the same random batch.

Prints images/s of each arm, the ratios to contiguous and the largest difference of the outputs
relative to their scale (float32 rounding: neither is part of a cache key).

    python benchmarks/bench_layout.py --batch-size 32 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from agiqa_lib.backbones.clip import create_clip
from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
from agiqa_lib.backbones.weights import create_lite0
from agiqa_lib.core.folding import fold_batchnorm


def images_per_s(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    encoders = {"lite CLIP encode_image": create_clip("lite").model.visual,
                "lite IQA backbone tokens": create_iqa_backbone("lite"),
                "stand-in pooled features": create_lite0(num_classes=0).eval()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {len(x)}")
    print("| encoder | contiguous img/s | channels_last img/s (ratio) "
          "| + folded norms img/s (ratio) | max diff / scale (last, folded) |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for name, fast in encoders.items():
            plain = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
            folded = fold_batchnorm(fast)
            a, b, c = plain(x), fast(x), folded(x)
            rel_b, rel_c = (float((a - b).abs().max() / a.abs().max()),
                            float((a - c).abs().max() / a.abs().max()))
            rates = [images_per_s(model, x, args.repeats) for model in (plain, fast, folded)]
            print(f"| {name} | {rates[0]:.1f} | {rates[1]:.1f} ({rates[1] / rates[0]:.2f}x) "
                  f"| {rates[2]:.1f} ({rates[2] / rates[0]:.2f}x) | {rel_b:.1e}, {rel_c:.1e} |")


if __name__ == "__main__":
    main()
