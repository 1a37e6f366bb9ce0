"""`agiqa score`: score a folder (or files) of images with a trained checkpoint.

Cheap checks come before the model is built: `-o` must be a file path (an existing folder is
an error, not a place to invent a file name in), `--batch-size` must be >= 1, and the inputs
must hold at least one image file (hidden files and folders are skipped, as by the `folder`
dataset). Unreadable images are listed once on stderr; none readable, or NaN predictions,
exit with code 2 and one message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import atomic_path

NAME = "score"
HELP = "score your own images with a checkpoint trained by notebook 02 or 04"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint from notebook 02/04")
    parser.add_argument("-o", "--output", default="scores.csv",
                        help="CSV file to write (path,score); not a folder")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="images read per batch (>= 1); on a CPU the model encodes them a "
                             "few at a time (4 at 224 px, 1 at 512 px), which is faster there")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from agiqa_lib.scoring import check_batch_size, collect_images, load_scorer, score_images

    output = Path(args.output)
    if output.is_dir():
        raise AgiqaError(f"-o/--output {output} is a folder; pass a file path such as "
                         f"{output / 'scores.csv'}")
    check_batch_size(args.batch_size)
    paths = collect_images(args.inputs)
    scorer = load_scorer(args.checkpoint, device=args.device)
    result = score_images(scorer, paths, batch_size=args.batch_size, warn=False)
    with atomic_path(output) as tmp:
        result.scores.to_csv(tmp, index=False)
    print(f"scored {len(result.scores)} images -> {output}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable files:", file=sys.stderr)
        for _, reason in result.skipped:  # each reason names its file
            print(f"  {reason}", file=sys.stderr)
    return 0
