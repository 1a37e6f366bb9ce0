"""`agiqa train-clip`: the notebook-02 CLIP-AGIQA experiment from the command line.

Launched on several processes (`accelerate launch --multi_gpu --num_processes N -m
agiqa_lib.cli train-clip ...`, `torchrun --nproc_per_node N -m agiqa_lib.cli train-clip ...`),
features are extracted and training is data-parallel (`agiqa_lib.core.distributed`); rank 0
prints and writes. `--gradient-accumulation-steps N` (here and in `train-ma`) sets accelerate's
`ACCELERATE_GRADIENT_ACCUMULATION_STEPS`: each process's share of a global batch is split into
N micro-batches (less memory per process); the global batch, and so the optimisation, stays
the paper's. The process group is created from the study's `device` before anything is built
(CUDA: NCCL, one GPU per process; CPU: gloo).

`--param NAME=VALUE` (repeatable; both commands) sets a setting the way a notebook parameter
does (YAML value; names that are not settings of the study are ignored, as the notebook's
config ignores them), so that `run_all.sh --launcher accelerate` trains with exactly the
notebooks' settings and the notebooks find the finished training states.
"""

from __future__ import annotations

import argparse
import os
from typing import TypeVar

import pandas as pd

from agiqa_lib.clip_agiqa import study
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.commands.options import add_config_arguments
from agiqa_lib.core import distributed
from agiqa_lib.core.config import StudyConfig
from agiqa_lib.core.errors import AgiqaError

C = TypeVar("C", bound=StudyConfig)

NAME = "train-clip"
HELP = ("train CLIP-AGIQA and its image-only control under every selection rule, run the "
        "zero-shot and probe baselines, print the table and save a checkpoint")
# spellings of earlier versions, kept working
ALIASES = {"n_aug_views": ["--aug-views"], "results_path": ["--results"],
           "precision": ["--frozen-precision"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa train-clip`: the fields of ClipStudyConfig."""
    add_config_arguments(parser, ClipStudyConfig, aliases=ALIASES)
    add_launch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the study, print its table, timings and checkpoint."""
    cfg = config_with_params(ClipStudyConfig, args)
    cfg.apply_threads()
    group = apply_launch_arguments(args, cfg)
    say = print if group.is_main else (lambda *a, **k: None)  # launched: rank 0 prints
    say(f"profile {cfg.profile}, weights {cfg.weights}, precision {cfg.precision}, "
        f"recipe {cfg.recipe} ({cfg.epochs} epochs), augmentation {cfg.augmentation_label}, "
        f"device {cfg.device}"
        + ("" if cfg.feature_scale == 1.0 else f", feature_scale {cfg.feature_scale:g}")
        + ("" if cfg.text_feature_scale is None
           else f", text_feature_scale {cfg.text_feature_scale:g}"))
    if cfg.random_weights:
        say("RANDOM weights: a pipeline check, the numbers mean nothing")
    result = study.run(cfg)
    columns = ["model", "selection", "srcc", "srcc_lo", "srcc_hi", "plcc_raw", "plcc_raw_lo",
               "plcc_raw_hi", "krcc", "rmse_logistic", "n", "epoch"]
    table = result.table
    if result.released is not None:  # the released recipe on the same features, labelled
        table = pd.concat([table, result.released.table.assign(
            model=lambda t: t["model"] + " (released recipe)")], ignore_index=True)
    say(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    say("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    say(f"checkpoint: {result.checkpoint}")
    return 0


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """`--gradient-accumulation-steps` and `--param` (train-clip and train-ma)."""
    parser.add_argument("--gradient-accumulation-steps", type=int, default=None,
                        help="micro-batches per process and global batch (sets "
                             f"{distributed.ACCUMULATION_VARIABLE}; default 1): the global "
                             "batch stays the paper's whatever the processes and memory")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting given as a notebook parameter (YAML value, repeatable, "
                             "applied after the options); names that are not settings of "
                             "this study are ignored, as in the notebook")


def config_with_params(config_cls: type[C], args: argparse.Namespace) -> C:
    """The study config of the options, then of the `--param NAME=VALUE` items (VALUE a Python
    literal, as in a notebook's parameters cell, else YAML, as papermill's `-y`)."""
    import ast

    import yaml

    values = dict(vars(args))
    for item in getattr(args, "param", None) or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise AgiqaError(f"--param takes NAME=VALUE, got {item!r}.")
        try:
            values[name.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            try:
                values[name.strip()] = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise AgiqaError(f"--param {item!r}: the value is neither a Python literal nor "
                                 f"YAML ({err}).") from None
    return config_cls.from_mapping(values)


def apply_launch_arguments(args: argparse.Namespace,
                           cfg: StudyConfig) -> distributed.ProcessGroup:
    """Apply the accumulation option; return the run's process group (one process unless
    launched)."""
    steps = getattr(args, "gradient_accumulation_steps", None)
    if steps is not None:
        if steps < 1:
            raise AgiqaError(f"--gradient-accumulation-steps must be >= 1, got {steps}.")
        os.environ[distributed.ACCUMULATION_VARIABLE] = str(steps)
    group = distributed.current(cfg.device)
    if group.distributed and group.is_main:
        print(f"launched: {group.world_size} processes ({'CPU, gloo' if group.cpu else 'CUDA'}"
              f"), {distributed.gradient_accumulation_steps()} micro-batch(es) per process and "
              "global batch")
    return group
