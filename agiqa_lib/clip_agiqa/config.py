"""`ClipStudyConfig`: every setting of the CLIP-AGIQA study (notebook 02, `agiqa train-clip`)."""

from __future__ import annotations

from dataclasses import dataclass

from agiqa_lib.clip_agiqa.binning import BINNING_RULES
from agiqa_lib.clip_agiqa.train import TrainConfig
from agiqa_lib.core.config import StudyConfig, option
from agiqa_lib.core.errors import AgiqaError

FAST_EPOCHS, FAST_AUG_VIEWS, FAST_BOOT = 2, 1, 100  # `fast=True`: a smoke run


@dataclass(frozen=True)
class ClipStudyConfig(StudyConfig):
    """The CLIP-AGIQA study: data, the released training recipe, selection and outputs.

    Defaults are the released ones (80/20 split with random_state 42, 100 epochs, seed 0).
    With `fast=True` epochs, augmented views and bootstrap resamples shrink to a smoke run.
    """

    protocol: str = option("clip_agiqa", "split protocol (clip_agiqa as released, "
                                         "prompt_disjoint, ma_agiqa, ...)")
    seed: int = option(0, "seed of the context/head initialisation, batches and views")
    epochs: int = option(100, "training epochs (the released schedule: 1 warm-up + cosine)")
    n_aug_views: int = option(8, "cached augmented views per training image")
    val_fraction: float = option(0.1, "share of train carved out as val for best_on_val "
                                      "when the split has no val part")
    binning: str = option("quantiles", "quality-class cut-points: quantiles of the train MOS "
                                       "or the released ones", choices=BINNING_RULES)
    batch_size: int = option(32, "images per batch when extracting features")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1 or self.n_aug_views < 0:
            raise AgiqaError(f"epochs must be >= 1 and n_aug_views >= 0, got {self.epochs} "
                             f"and {self.n_aug_views}.")
        if not 0 < self.val_fraction < 1:
            raise AgiqaError(f"val_fraction must lie in (0, 1), got {self.val_fraction}.")
        if self.fast:
            object.__setattr__(self, "epochs", min(self.epochs, FAST_EPOCHS))
            object.__setattr__(self, "n_aug_views", min(self.n_aug_views, FAST_AUG_VIEWS))
            object.__setattr__(self, "n_boot", min(self.n_boot, FAST_BOOT))

    def train_config(self) -> TrainConfig:
        """The optimisation recipe of this study (released defaults, our epochs and seed)."""
        return TrainConfig(epochs=self.epochs, seed=self.seed)
