"""One CoOp training step of CLIP-AGIQA's text side: the full 77-token prompts vs the prompts
cut after the longest one (`TextTower.trimmed`), measured in one run.

A step re-encodes the six quality prompts through the frozen text tower and backpropagates into
the 16 context vectors. Both arms use the same context and the same tower; the script checks
that the text features and the context gradient agree (the cut is exact) and prints the time
per step and the ratio. `full` builds ViT-B/16's causal OpenAI tower with random weights (the
same shapes as the paper's, no download); `lite` is the packaged MiniLM tower (masked mean).

    python benchmarks/bench_coop_trim.py --profile lite --steps 20
    python benchmarks/bench_coop_trim.py --profile full --steps 10
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from agiqa_lib.backbones.clip import create_clip  # noqa: E402
from agiqa_lib.backbones.text_tower import TextTower  # noqa: E402
from agiqa_lib.clip_agiqa.binning import QUALITY_CLASSES  # noqa: E402

N_CTX = 16


def step(tower: TextTower, ids: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Text features [6, D] of the prompts with `ctx` inserted, and d(sum of features)/d ctx."""
    ctx = ctx.detach().requires_grad_(True)
    with torch.no_grad():
        embeds = tower.token_embedding(ids)
    feats = tower.encode_with_embeddings(tower.insert_context(embeds, ctx), ids)
    feats.float().pow(2).sum().backward()
    return feats.detach(), ctx.grad


def timed(tower: TextTower, ids: torch.Tensor, ctx: torch.Tensor, steps: int) -> float:
    """Seconds per step (after one warm-up step)."""
    step(tower, ids, ctx)
    start = time.perf_counter()
    for _ in range(steps):
        step(tower, ids, ctx)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="lite", choices=("full", "lite"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = {"pretrained": None} if args.profile == "full" else {}
    bundle = create_clip(args.profile, **kwargs)
    tower = TextTower(bundle.model)
    full_ids = tower.placeholder_prompts(QUALITY_CLASSES, N_CTX)
    cut_ids = tower.trimmed(full_ids)
    ctx = torch.randn(N_CTX, tower.width) * 0.02
    feats_full, grad_full = step(tower, full_ids, ctx)
    feats_cut, grad_cut = step(tower, cut_ids, ctx)
    feat_err = float((feats_full - feats_cut).abs().max() / feats_full.abs().max())
    grad_err = float((grad_full - grad_cut).abs().max() / grad_full.abs().max())
    t_full = timed(tower, full_ids, ctx, args.steps)
    t_cut = timed(tower, cut_ids, ctx, args.steps)
    print(f"profile {args.profile} ({tower.kind} text tower), {len(QUALITY_CLASSES)} prompts, "
          f"{N_CTX} context vectors, {torch.get_num_threads()} threads, {args.steps} steps\n")
    print("| prompts | positions | ms / step | ratio |")
    print("|---|---|---|---|")
    print(f"| full context | {full_ids.shape[1]} | {1000 * t_full:.1f} | 1.00x |")
    print(f"| trimmed | {cut_ids.shape[1]} | {1000 * t_cut:.1f} | {t_full / t_cut:.2f}x faster |")
    print(f"\nmax relative difference: text features {feat_err:.1e}, context gradient {grad_err:.1e}")


if __name__ == "__main__":
    main()
