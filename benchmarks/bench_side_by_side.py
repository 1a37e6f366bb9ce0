"""MA-AGIQA `lite` training steps: one process on 1 thread, one process on all cores, and one
single-thread process per core side by side (`core.side_by_side`), measured in one run.

Each arm trains the `lite` model (random heads, Lite0-shaped tokens [8, 512, 196], batch 8
as released) for `--steps` steps per process and reports steps per second summed over its
processes; the ratios are against the one-thread arm. Workers are started before the clock
runs (imports and model building are not timed).

    python benchmarks/bench_side_by_side.py --steps 40
"""

from __future__ import annotations

import argparse
import time

import torch

from agiqa_lib.core import side_by_side


def steps_per_s(threads: int, steps: int) -> float:
    """Training steps per second of the lite MA-AGIQA model with `threads` torch threads."""
    from agiqa_lib.ma_agiqa.model import create_ma_agiqa

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_ma_agiqa("lite", "released_gate", pretrained=False).train()
    x = torch.randn(8, model.cfg.maniqa.in_channels, model.cfg.maniqa.num_tokens)
    sem, y = torch.randn(8, 2, 384), torch.rand(8) * 4
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model.forward_tokens(x, sem).score, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cores = side_by_side.usable_cores()
    one = steps_per_s(1, args.steps)
    alone = steps_per_s(cores, args.steps)
    apart = sum(side_by_side.run_side_by_side(steps_per_s, [(1, args.steps)] * cores, cores,
                                              progress=False))
    print(f"{cores} usable cores, torch {torch.__version__}")
    print("| arm | steps/s | ratio |\n|---|---|---|")
    for name, value in ((f"1 process, 1 thread", one), (f"1 process, {cores} threads", alone),
                        (f"{cores} processes side by side, 1 thread each", apart)):
        print(f"| {name} | {value:.2f} | {value / one:.2f}x |")


if __name__ == "__main__":
    main()
