"""`agiqa q-align`: zero-shot Q-Align (OneAlign) quality scores of a dataset, and SRCC/PLCC."""

from __future__ import annotations

import argparse
import time

from agiqa_lib.commands.options import add_dataset_arguments
from agiqa_lib.data.datasets import load_dataset

NAME = "q-align"
HELP = ("score every image of a dataset with Q-Align (q-future/one-align, zero-shot, in [1, 5]) "
        "and print SRCC/PLCC against the MOS when the dataset has one")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa q-align`."""
    add_dataset_arguments(parser, ("full", "tiny"), default_profile="full",
                          limit="only the first N images of the dataset (for timing runs)")
    parser.add_argument("--model-id", default=None,
                        help="full only: hub id or local folder (default q-future/one-align)")
    parser.add_argument("--quantization", default=None, choices=["8bit", "4bit"],
                        help="full only: load in 8-/4-bit with bitsandbytes (CUDA)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward (8)")
    parser.add_argument("-o", "--output", default=None, help="write name,score to this CSV")


def run(args: argparse.Namespace) -> int:
    """Score, optionally save the scores, print correlations with the MOS when there is one."""
    from agiqa_lib.backbones.mplug_owl2.qalign import load_qalign, q_align_scores
    from agiqa_lib.evaluation.metrics import evaluate

    df = load_dataset(args.dataset, root=args.root)
    if args.limit is not None:
        df = df.head(args.limit)
    scorer = load_qalign(args.profile, args.model_id, device=args.device,
                         quantization=args.quantization)
    start = time.perf_counter()
    scores = q_align_scores(df, scorer, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(f"Q-Align scores of {len(scores)} images from {scorer.model_id} in {seconds:.1f} s "
          f"({len(scores) / max(seconds, 1e-9):.2f} images/s)")
    if args.output:
        scores.to_csv(args.output, index=False)
        print(f"scores written to {args.output}")
    if "mos" in df.columns and df["mos"].notna().sum() >= 3:
        table = df[["name", "mos"]].merge(scores, on="name")
        metrics = evaluate(table["score"].to_numpy(), table["mos"].to_numpy())
        print(f"SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  "
              f"(PLCC after the logistic fit {metrics['plcc_logistic']:.4f}, n = {metrics['n']})")
    if scorer.profile == "tiny":
        print("note: the tiny profile is a RANDOM model; its scores test the plumbing only")
    return 0
