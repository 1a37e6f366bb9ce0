"""The `agiqa` command line: one subcommand per module in `agiqa_lib.commands`."""

from __future__ import annotations

import argparse
import importlib
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
    try:
        return int(args._run(args) or 0)
    except AgiqaError as err:
        print(f"agiqa {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
