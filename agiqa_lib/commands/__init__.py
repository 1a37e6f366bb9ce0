"""Subcommands of the `agiqa` CLI, one module each (see `agiqa_lib.cli.COMMANDS`)."""
