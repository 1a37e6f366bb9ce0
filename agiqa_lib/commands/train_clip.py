"""`agiqa train-clip`: the notebook-02 CLIP-AGIQA experiment from the command line."""

from __future__ import annotations

import argparse

from agiqa_lib.clip_agiqa import study
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.commands.options import add_config_arguments, config_from_args

NAME = "train-clip"
HELP = ("train CLIP-AGIQA and its image-only control under every selection rule, run the "
        "zero-shot and probe baselines, print the table and save a checkpoint")
# spellings of earlier versions, kept working
ALIASES = {"n_aug_views": ["--aug-views"], "results_path": ["--results"],
           "precision": ["--frozen-precision"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa train-clip`: the fields of ClipStudyConfig."""
    add_config_arguments(parser, ClipStudyConfig, aliases=ALIASES)


def run(args: argparse.Namespace) -> int:
    """Run the study, print its table, timings and checkpoint."""
    cfg = config_from_args(ClipStudyConfig, args)
    cfg.apply_threads()
    print(f"profile {cfg.profile}, weights {cfg.weights}, precision {cfg.precision}, "
          f"augmentation {cfg.augmentation_label}, device {cfg.device}")
    if cfg.random_weights:
        print("RANDOM weights: a pipeline check, the numbers mean nothing")
    result = study.run(cfg)
    columns = ["model", "selection", "srcc", "srcc_lo", "srcc_hi", "plcc_raw", "plcc_raw_lo",
               "plcc_raw_hi", "krcc", "rmse_logistic", "n", "epoch"]
    print(result.table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    print(f"checkpoint: {result.checkpoint}")
    return 0
