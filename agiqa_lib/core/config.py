"""What every study configuration shares: dataset, profile, split, device, precision, outputs.

A study is configured by ONE frozen dataclass (`ClipStudyConfig`, `MAStudyConfig`, both
subclasses of `StudyConfig`). Notebooks build it from their papermill parameters cell
(`Config.from_mapping(globals())`), the CLI derives its options from the same fields
(`agiqa_lib.commands.options`), and every model and loop reads `device` and `precision`
from it. Field metadata carries the help text and choices shown by the CLI.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import PROFILE_NAMES, get_profile

PRECISIONS: Mapping[str, torch.dtype] = {
    "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# CLIP-AGIQA's released default (Dassl PREC "fp16"): CLIP and the context vectors in fp16, the
# regression head in fp32 (see `clip_agiqa.model`). Its tensors are fp16.
FP16_AS_RELEASED = "fp16_as_released"
CLIP_PRECISIONS: tuple[str, ...] = (*PRECISIONS, FP16_AS_RELEASED)
WEIGHTS = ("pretrained", "random")  # random: full-size architectures, random weights (full only)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (the first available of cuda, mps, cpu)"

C = TypeVar("C", bound="StudyConfig")
# `fast=True`: the images a study keeps (evenly spread over the dataset), bootstrap resamples
FAST_LIMIT, FAST_BOOT = 96, 100


def option(default: Any, help: str, choices: tuple | None = None, **kwargs: Any) -> Any:
    """A dataclass field with the help text (and choices) the CLI shows for it."""
    metadata = {"help": help, **({"choices": choices} if choices else {})}
    return field(default=default, metadata=metadata, **kwargs)


def resolve_device(device: str) -> torch.device:
    """The torch device for a device option; one clear error when it is not available here."""
    name = str(device)
    if not DEVICE_PATTERN.match(name):
        raise AgiqaError(f"device {name!r} is not one of: {DEVICE_HELP}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise AgiqaError(f"device {name!r} asked for, but this machine has {count} usable CUDA "
                             "device(s): pass device='cpu' or 'auto'.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise AgiqaError("device 'mps' asked for, but Apple MPS is not available here: pass "
                         "device='cpu' or 'auto'.")
    return torch.device(name)


def precision_dtype(precision: str) -> torch.dtype:
    """torch dtype of a precision name (fp32, fp16, bf16; fp16_as_released is fp16)."""
    if precision == FP16_AS_RELEASED:
        return torch.float16
    if precision not in PRECISIONS:
        raise AgiqaError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def is_cuda(device: str) -> bool:
    """Whether a device option means a CUDA device here (`auto` does when CUDA is available)."""
    name = str(device)
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def auto_option(value: Any, default: Any) -> Any:
    """`default` when a setting is left to the profile (None or "auto"), else the value itself."""
    return default if value is None or value == "auto" else value


@dataclass(frozen=True)
class StudyConfig:
    """Fields every study shares. Subclasses add the paper's own settings."""

    dataset: str = option("demo", "dataset name (demo, agiqa3k, aigciqa2023, aigiqa20k, "
                                  "koniq10k, spaq)")
    root: str | None = option(None, "dataset folder (not needed for demo)")
    target: str | None = option(None, "score column to use as MOS (default: the dataset's)")
    profile: str = option("lite", "weight profile", choices=PROFILE_NAMES)
    protocol: str = option("", "split protocol")
    split_seed: int | None = option(None, "replace the protocol's own split seed")
    limit: int | None = option(None, "keep N images evenly spread over the dataset before "
                                     "splitting (quick looks; fast: at most 96)")
    weights: str = option("pretrained", "pretrained: the profile's weights; random: the "
                                        "full-size architectures with random weights, a "
                                        "pipeline check without downloads (profile full only; "
                                        "results and files are labelled random)",
                          choices=WEIGHTS)
    device: str = option("cpu", f"torch device: {DEVICE_HELP}")
    precision: str = option("fp32", "dtype of the frozen encoders", choices=tuple(PRECISIONS))
    out_dir: str = option("outputs", "figures/, checkpoints/, runs/ and predictions/ go here")
    results_path: str | None = option(None, "results file (JSON lines) to add records to")
    fast: bool = option(False, "smoke-test settings (tiny data and schedules)")
    n_boot: int = option(1000, "bootstrap resamples for the confidence intervals")
    threads: int | None = option(None, "torch CPU threads (default: torch's own choice)")
    parallel_runs: int = option(0, "independent training runs (variants, seeds) side by side "
                                   "in N worker processes, each with threads // N threads "
                                   "(same results as one such run alone); 0 = auto: one per "
                                   "CPU core on a CPU, 1 on a GPU; 1 = one after another")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        get_profile(self.profile)
        precision_dtype(self.precision)
        if self.weights not in WEIGHTS:
            raise AgiqaError(f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}.")
        if self.weights == "random" and self.profile != "full":
            raise AgiqaError(f"weights='random' (--weights random) builds the full-size "
                             f"architectures with random weights, so it applies to profile "
                             f"'full' only, not {self.profile!r}; the tiny profile is already "
                             "random.")
        if not DEVICE_PATTERN.match(str(self.device)):
            raise AgiqaError(f"device {self.device!r} is not one of: {DEVICE_HELP}.")
        if self.parallel_runs < 0:
            raise AgiqaError(f"parallel_runs must be 0 (auto) or a number of processes, got "
                             f"{self.parallel_runs}.")
        if self.parallel_runs == 0 and (self.fast or self.profile == "full"):
            # smoke runs last seconds: starting workers (imports, ~5 s each) would cost more;
            # a full run fine-tunes a ViT-B/8 (about 10 GiB on a CPU): one at a time
            object.__setattr__(self, "parallel_runs", 1)
        if self.n_boot < 1:
            raise AgiqaError(f"n_boot must be a positive number of resamples, got {self.n_boot}.")
        if self.limit is not None and self.limit < 1:
            raise AgiqaError(f"limit must be a positive number of images, got {self.limit}.")
        if self.fast:
            object.__setattr__(self, "limit", min(self.limit or FAST_LIMIT, FAST_LIMIT))
            object.__setattr__(self, "n_boot", min(self.n_boot, FAST_BOOT))

    @classmethod
    def from_mapping(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from a mapping holding (at least) some of the fields, e.g. a notebook's globals().

        Names that are not fields are ignored (a notebook namespace holds much else); lists
        become tuples for tuple fields (papermill passes YAML lists).
        """
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                value = values[f.name]
                if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
                    value = tuple(value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def apply_threads(self) -> None:
        """Set torch's CPU thread count when `threads` is given (a study's first step)."""
        if self.threads:
            torch.set_num_threads(self.threads)

    @property
    def torch_device(self) -> torch.device:
        """The resolved torch device (checks that it exists on this machine)."""
        return resolve_device(self.device)

    @property
    def dtype(self) -> torch.dtype:
        """torch dtype of `precision`."""
        return precision_dtype(self.precision)

    @property
    def out(self) -> Path:
        """`out_dir` as a Path."""
        return Path(self.out_dir)

    @property
    def random_weights(self) -> bool:
        """Whether this study runs the full-size architectures with random weights."""
        return self.weights == "random"

    @property
    def weights_tag(self) -> str:
        """"_random" for random-weight runs (file and folder names), else ""."""
        return "_random" if self.random_weights else ""

    @property
    def protocol_tag(self) -> str:
        """"_<protocol>" when the split is not the study's own (its `protocol` default), else
        "": file names that would otherwise be shared by runs on two splits of one output
        folder (the scorer checkpoints; `run_all.sh --also-protocol`)."""
        default = next(f.default for f in dataclasses.fields(self) if f.name == "protocol")
        return "" if self.protocol == default else f"_{self.protocol}"
