"""`agiqa train-ma`: train MA-AGIQA variants (and MANIQA alone) as notebook 04 does, headless."""

from __future__ import annotations

import argparse

import pandas as pd

NAME = "train-ma"
HELP = ("train MA-AGIQA / MANIQA variants on a dataset and split (resumable), print test "
        "metrics, save a scorer checkpoint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa train-ma`."""
    from agiqa_lib.ma_agiqa.model import VARIANTS

    parser.add_argument("dataset", help="dataset name (agiqa3k, demo, ...)")
    parser.add_argument("--root", default=None, help="dataset folder (not needed for demo)")
    parser.add_argument("--profile", default="lite", choices=["full", "lite", "tiny"])
    parser.add_argument("--protocol", default="ma_agiqa", help="split protocol")
    parser.add_argument("--variants", nargs="+", default=["maniqa", "released_gate",
                                                          "softmax_gate"], choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[20])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the profile's (full 30, lite 10)")
    parser.add_argument("--flip", default="as_released", choices=["as_released", "horizontal"])
    parser.add_argument("--out-dir", default="outputs", help="runs/ and checkpoints/ go here")
    parser.add_argument("--results", default=None, help="results file to append to (JSONL)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    """Train, print one row per variant x evaluation, save the scorer checkpoint."""
    from agiqa_lib.ma_agiqa.train import run_study, save_scorer_checkpoint, seed_summary

    study = run_study(args.dataset, args.root, args.profile, args.protocol, args.variants,
                      args.seeds, args.epochs, args.out_dir, args.results, flip=args.flip,
                      device=args.device)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(seed_summary(study.table).round(4).to_string(index=False))
    for run_ in study.runs:
        print(f"{run_.variant} seed {run_.seed}: best epoch {run_.best_epoch}, "
              f"{run_.seconds:.0f} s")
    print(f"checkpoint: {save_scorer_checkpoint(study, args.out_dir)}")
    return 0
