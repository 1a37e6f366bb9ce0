"""`agiqa score`: score a folder (or files) of images with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agiqa_lib.core.io import atomic_path

NAME = "score"
HELP = "score your own images with a checkpoint trained by notebook 02 or 04"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint from notebook 02/04")
    parser.add_argument("-o", "--output", default="scores.csv", help="CSV to write (path,score)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from agiqa_lib.scoring import load_scorer, score_images

    scorer = load_scorer(args.checkpoint, device=args.device)
    result = score_images(scorer, args.inputs, batch_size=args.batch_size)
    with atomic_path(args.output) as tmp:
        result.scores.to_csv(tmp, index=False)
    print(f"scored {len(result.scores)} images -> {Path(args.output)}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable files:", file=sys.stderr)
        for path, reason in result.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0
