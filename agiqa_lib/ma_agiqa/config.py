"""`MAStudyConfig`: every setting of the MA-AGIQA study (notebook 04, `agiqa train-ma`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agiqa_lib.core.config import StudyConfig, option
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.ma_agiqa.model import VARIANTS

FAST_LIMIT, FAST_EPOCHS, FAST_BOOT = 96, 2, 100  # `fast=True`: a smoke run
FLIPS = ("as_released", "horizontal")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run; defaults are the released ones (`main.py`)."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 1e-5
    t_max: int = 50                  # CosineAnnealingLR period, in iterations
    eta_min: float = 0.0
    aug_prob: float = 0.7
    flip: str = "as_released"        # or "horizontal" (the corrected flip)
    seed: int = 20
    eval_batch_size: int = 32
    num_workers: int = 0             # image loading workers (full profile)
    device: str = "cpu"


def train_config(profile: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a profile (its departures from the release, see `core.profiles`),
    with `overrides` (None values ignored) applied."""
    settings = {**get_profile(profile).ma_training,
                **{k: v for k, v in overrides.items() if v is not None}}
    cfg = replace(TrainConfig(), **settings)
    if cfg.flip not in FLIPS:
        raise AgiqaError(f"flip must be one of {FLIPS}, got {cfg.flip!r}")
    if cfg.epochs < 1 or cfg.lr <= 0:
        raise AgiqaError(f"epochs must be >= 1 and lr > 0, got {cfg.epochs} and {cfg.lr}")
    return cfg


@dataclass(frozen=True)
class MAStudyConfig(StudyConfig):
    """The MA-AGIQA study: data, variants x seeds, the released recipe and outputs.

    Defaults are the released ones (70/10/20 split with seed 20, training seed 20, the
    profile's epochs: 30 for `full`). With `fast=True`: 96 images, 2 epochs.
    """

    protocol: str = option("ma_agiqa", "split protocol (ma_agiqa as released, "
                                       "prompt_disjoint, ...)")
    variants: tuple[str, ...] = option(("maniqa", "released_gate", "softmax_gate"),
                                       "variants to train", choices=VARIANTS)
    seeds: tuple[int, ...] = option((20,), "training seeds (the release uses 20)")
    epochs: int | None = option(None, "training epochs (default: the profile's, full 30)")
    lr: float | None = option(None, "learning rate (default: the profile's, full 1e-5)")
    flip: str = option("as_released", "training flip: as released (vertical in effect) or "
                                      "the corrected horizontal one", choices=FLIPS)
    clean_tablock: bool = option(False, "use the corrected TABlock reshape")
    mllm_model_id: str | None = option(None, "full only: MLLM hub id or local folder for "
                                             "the semantic vectors")
    limit: int | None = option(None, "keep N images evenly spread over the dataset "
                                     "(quick looks)")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise AgiqaError(f"unknown or no variants {unknown}: choose from {', '.join(VARIANTS)}.")
        if not self.seeds:
            raise AgiqaError("seeds must name at least one training seed.")
        if self.limit is not None and self.limit < 1:
            raise AgiqaError(f"limit must be a positive number of images, got {self.limit}.")
        if self.fast:
            object.__setattr__(self, "limit", min(self.limit or FAST_LIMIT, FAST_LIMIT))
            object.__setattr__(self, "epochs", min(self.epochs or FAST_EPOCHS, FAST_EPOCHS))
            object.__setattr__(self, "n_boot", min(self.n_boot, FAST_BOOT))
        train_config(self.profile, epochs=self.epochs, lr=self.lr, flip=self.flip)  # validates

    @property
    def needs_semantic(self) -> bool:
        """Whether any variant fuses the MLLM vectors (all but MANIQA alone)."""
        return any(v != "maniqa" for v in self.variants)

    def train_config(self, seed: int) -> TrainConfig:
        """The optimisation recipe of one run: the profile's, with this study's overrides."""
        return train_config(self.profile, epochs=self.epochs, lr=self.lr, seed=seed,
                            flip=self.flip, device=str(self.torch_device))
