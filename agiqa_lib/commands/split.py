"""`agiqa split`: write a dataset's train/val/test assignment under one protocol as name,split."""

from __future__ import annotations

import argparse

from agiqa_lib.commands.options import add_dataset_arguments
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.core.io import atomic_path
from agiqa_lib.data.splits import PROTOCOLS, make_split

NAME = "split"
HELP = "assign every image of a dataset to train/val/test under a split protocol (CSV name,split)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa split`."""
    add_dataset_arguments(parser)
    parser.add_argument("--protocol", required=True,
                        help=f"split protocol: {', '.join(PROTOCOLS)}")
    parser.add_argument("--seed", type=int, default=None,
                        help="replace the protocol's default seed (ma_agiqa 20, clip_agiqa 42, "
                             "prompt-disjoint 0)")
    parser.add_argument("--target", default=None, help="score column to load as MOS "
                                                       "(does not change the split)")
    parser.add_argument("-o", "--output", required=True, help="CSV file to write (name,split)")


def run(args: argparse.Namespace) -> int:
    """Load the score file (images are not checked), split it, write the CSV atomically."""
    df = load_dataset(args.dataset, root=args.root, target=args.target, check_files=False)
    split = make_split(df, args.protocol, seed=args.seed)
    with atomic_path(args.output) as tmp:
        df[["name"]].assign(split=split).to_csv(tmp, index=False)
    counts = split.value_counts()
    summary = ", ".join(f"{part} {int(counts.get(part, 0))}" for part in ("train", "val", "test"))
    print(f"wrote {args.output}: {summary}")
    return 0
