"""The `agiqa` command line: one subcommand per module in `agiqa_lib.commands`.

Runs as `agiqa ...`, `python -m agiqa_lib.cli ...`, or on several processes as
`accelerate launch [--multi_gpu] --num_processes N -m agiqa_lib.cli ...` or
`torchrun --nproc_per_node N -m agiqa_lib.cli ...` (`extract`, `semantic extract`,
`train-clip` and `train-ma` share their work out; see `agiqa_lib.core.distributed`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from agiqa_lib.core.errors import AgiqaError

# Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = [
    "agiqa_lib.commands.split",
    "agiqa_lib.commands.score",
    "agiqa_lib.commands.extract",
    "agiqa_lib.commands.semantic",
    "agiqa_lib.commands.train_clip",
    "agiqa_lib.commands.train_ma",
    "agiqa_lib.commands.qalign",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="agiqa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agiqa` console script; user errors print one line, exit code 2."""
    args = build_parser().parse_args(argv)
    from agiqa_lib.core import distributed

    try:
        code = int(args._run(args) or 0)
    except AgiqaError as err:
        rank = f" (rank {os.environ.get('RANK', '?')})" if distributed.launched() else ""
        print(f"agiqa {args.command}{rank}: error: {err}", file=sys.stderr)
        return 2
    distributed.close()  # a launched run: every rank finished, the process group ends
    return code


if __name__ == "__main__":
    sys.exit(main())
