"""`agiqa train-ma`: train MA-AGIQA variants (and MANIQA alone) as notebook 04 does, headless.

Launched on several processes (`accelerate launch --multi_gpu --num_processes N -m
agiqa_lib.cli train-ma ...` or `torchrun`), caches are filled and every run is trained
data-parallel; rank 0 prints and writes (see `agiqa train-clip` for
`--gradient-accumulation-steps`).
"""

from __future__ import annotations

import argparse

import pandas as pd

from agiqa_lib.commands.options import add_config_arguments
from agiqa_lib.commands.train_clip import (add_launch_arguments, apply_launch_arguments,
                                           config_with_params)
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig

NAME = "train-ma"
HELP = ("train MA-AGIQA / MANIQA variants on a dataset and split (resumable), print test "
        "metrics, save a scorer checkpoint")
ALIASES = {"results_path": ["--results"]}  # the spelling of earlier versions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa train-ma`: the fields of MAStudyConfig."""
    add_config_arguments(parser, MAStudyConfig, aliases=ALIASES)
    add_launch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Train, print one row per variant x evaluation, save the scorer checkpoint."""
    cfg = config_with_params(MAStudyConfig, args)
    cfg.apply_threads()
    group = apply_launch_arguments(args, cfg)
    say = print if group.is_main else (lambda *a, **k: None)  # launched: rank 0 prints
    size = "auto" if cfg.image_size is None else cfg.image_size
    say(f"profile {cfg.profile}, weights {cfg.weights}, resize {cfg.resize}, image size {size}, "
        f"val selection {cfg.val_selection}, semantic source {cfg.semantic_source}, "
        f"device {cfg.device}")
    if cfg.random_weights:
        say("RANDOM weights: a pipeline check, the numbers mean nothing")
    result = study.run(cfg)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        say(study.seed_summary(result.table).round(4).to_string(index=False))
    for run_ in result.runs:
        say(f"{run_.variant} seed {run_.seed}: best epoch {run_.best_epoch} "
            f"({run_.selection}), {run_.seconds:.0f} s")
        for note in run_.notes:
            say(f"  note: {note}")
    say(f"checkpoint: {study.save_scorer_checkpoint(result, cfg)}")
    return 0
