"""`ClipStudyConfig`: every setting of the CLIP-AGIQA study (notebook 02, `agiqa train-clip`).

Settings left to the profile (`"auto"` / None) are resolved when the config is built, from the
profile table (`core.profiles`): for `full`, fresh views every epoch and, on CUDA,
`fp16_as_released` (the release); for `lite`/`tiny`, cached views and fp32. A CPU run of
`full` uses fp32 (the release's fp16 is refused on CPU: PyTorch's CPU fp16 kernels are slow or
missing), and the resolved values are what the result records carry.

The recipe (`CLIP_RECIPES`: head-input scales, epochs, cached views) is the profile's unless
set: `released` for `full`/`tiny`; for `lite` the `lite` recipe chosen on a validation part,
with CLIP-AGIQA trained once more with the released recipe beside it (`compare_released`).
A field left unset (None) takes its recipe's value; one set explicitly wins.
`feature_scale` (1.0: as released) multiplies the normalised head input
(`ClipAgiqaConfig.feature_scale`), `text_feature_scale` the text features apart from it; other
values name their runs (`scale_tag`), their training states and their result records apart
from the released ones.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from agiqa_lib.clip_agiqa.binning import BINNING_RULES
from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, checked_feature_scale
from agiqa_lib.clip_agiqa.train import TrainConfig
from agiqa_lib.core.config import (CLIP_PRECISIONS, FP16_AS_RELEASED, StudyConfig, auto_option,
                                   is_cuda, option)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile

FAST_EPOCHS, FAST_AUG_VIEWS = 2, 1  # `fast=True`: a smoke run (and `StudyConfig`'s images, bootstrap)
# What a recipe sets when the config leaves it unset. `released`: Tang et al.'s head input (unit
# features, text scaled with them) and 100-epoch schedule, on 8 cached views where views are
# cached. `lite`: chosen on the carved validation part of AGIQA-3K for lite's features, never on
# test (`benchmarks/select_lite_clip.py`, README "Measured so far").
CLIP_RECIPES = {
    "released": {"epochs": 100, "n_aug_views": 8, "feature_scale": 1.0, "text_feature_scale": None},
    "lite": {"epochs": 50, "n_aug_views": 0, "feature_scale": 22.6, "text_feature_scale": 1.0},
}
AUGMENTATIONS = ("fresh", "cached")
MAX_AUTO_WORKERS = 8  # the release's DATALOADER.NUM_WORKERS


@dataclass(frozen=True)
class ClipStudyConfig(StudyConfig):
    """The CLIP-AGIQA study: data, the training recipe, selection and outputs.

    Defaults are the released ones (80/20 split with random_state 42, seed 0; `full`: fresh
    views each epoch, fp16 on CUDA) and the profile's recipe (`CLIP_RECIPES`). With
    `fast=True` images (96), epochs, augmented views and bootstrap resamples shrink to a smoke run.
    """

    protocol: str = option("clip_agiqa", "split protocol (clip_agiqa as released, "
                                         "prompt_disjoint, ma_agiqa, ...)")
    precision: str = option("auto", "CLIP precision: fp16_as_released (the release: CLIP and "
                                    "context vectors fp16, head fp32; CUDA only), fp16 / bf16 "
                                    "(fp32 context), fp32; auto: fp16_as_released for full on "
                                    "CUDA, else fp32", choices=("auto", *CLIP_PRECISIONS))
    augmentation: str = option("auto", "training views: fresh (the release: a new random "
                                       "crop + flip of every image each epoch through the "
                                       "frozen CLIP) or cached (n_aug_views views cached once, "
                                       "faster); auto: the profile's (full fresh, lite/tiny "
                                       "cached)", choices=("auto", *AUGMENTATIONS))
    clip_checkpoint: str | None = option(None, "full only: local CLIP weights instead of the "
                                               "hub download (open_clip ViT-B-16 .pt/.bin/"
                                               ".safetensors state dict, or a folder with "
                                               "open_clip_config.json)")
    seed: int = option(0, "seed of the context/head initialisation, batches and views")
    recipe: str = option("auto", "head input and schedule: released (Tang et al.) or lite "
                                 "(image feature x 22.6, text features at unit norm, 50 epochs "
                                 "on the fixed view: chosen on a validation part for lite's "
                                 "features); auto: lite for profile lite, else released. "
                                 "Unset epochs, n_aug_views and scales take the recipe's",
                         choices=("auto", *CLIP_RECIPES))
    compare_released: bool = option(True, "with a recipe other than released, also train "
                                           "CLIP-AGIQA with the released recipe on the same "
                                           "features (one run on the train rows: best_on_test "
                                           "and last), reported beside it")
    epochs: int | None = option(None, "training epochs, 1 warm-up + cosine (default: the "
                                      "recipe's, 100 released, 50 lite)")
    n_aug_views: int | None = option(None, "cached augmented views per training image, "
                                           "augmentation=cached (default: the recipe's, 8 "
                                           "released, 0 lite: the fixed view)")
    val_fraction: float = option(0.1, "share of train carved out as val for best_on_val "
                                      "when the split has no val part")
    binning: str = option("quantiles", "quality-class cut-points: quantiles of the train MOS "
                                       "or the released ones", choices=BINNING_RULES)
    feature_scale: float | None = option(None, "multiply the L2-normalised head input "
                                              "(image and text features) by this before the "
                                              "regression head (default: the recipe's, 1.0 "
                                              "released, 22.6 = sqrt(512) lite)")
    text_feature_scale: float | None = option(None, "multiply the six text features by this "
                                                    "instead of feature_scale (default: the "
                                                    "recipe's: the same as feature_scale "
                                                    "released, 1.0 lite)")
    batch_size: int | None = option(None, "images per batch when extracting features "
                                          "(default: 4 on a CPU, 32 on a GPU)")
    num_workers: int | None = option(None, "image-loading worker processes for fresh views "
                                           "(default: 8 on CUDA as released, 0 elsewhere)")

    def __post_init__(self) -> None:
        profile = get_profile(self.profile)
        cuda = is_cuda(self.device)
        precision = auto_option(self.precision,
                                profile.clip_precision_cuda if cuda else "fp32")
        if precision not in CLIP_PRECISIONS:
            raise AgiqaError(f"precision must be one of auto, {', '.join(CLIP_PRECISIONS)}; got "
                             f"{precision!r}.")
        if precision == FP16_AS_RELEASED and not cuda and str(self.device) != "mps":
            raise AgiqaError("precision='fp16_as_released' runs CLIP and the context vectors "
                             "in fp16 as the release did on its GPU; on a CPU PyTorch's fp16 "
                             "kernels are slow or missing, so pass device='cuda' (--device "
                             "cuda) or precision='fp32' (the CPU default).")
        augmentation = auto_option(self.augmentation, profile.clip_augmentation)
        if augmentation not in AUGMENTATIONS:
            raise AgiqaError(f"augmentation must be auto, fresh or cached, got {augmentation!r}.")
        recipe = auto_option(self.recipe, profile.clip_recipe)
        if recipe not in CLIP_RECIPES:
            raise AgiqaError(f"recipe must be auto, {' or '.join(CLIP_RECIPES)}, got {recipe!r}.")
        object.__setattr__(self, "recipe", recipe)
        for name, value in CLIP_RECIPES[recipe].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        workers = self.num_workers
        if workers is None:
            workers = min(MAX_AUTO_WORKERS, os.cpu_count() or 1) if cuda else 0
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "augmentation", augmentation)
        object.__setattr__(self, "num_workers", int(workers))
        super().__post_init__()
        if self.clip_checkpoint is not None and self.profile != "full":
            raise AgiqaError(f"clip_checkpoint (--clip-checkpoint) is read by profile 'full' "
                             f"only, not {self.profile!r}.")
        if self.clip_checkpoint is not None and self.random_weights:
            raise AgiqaError("clip_checkpoint and weights='random' exclude each other: a "
                             "checkpoint holds real weights.")
        if self.epochs < 1 or self.n_aug_views < 0 or self.num_workers < 0:
            raise AgiqaError(f"epochs must be >= 1, n_aug_views and num_workers >= 0, got "
                             f"{self.epochs}, {self.n_aug_views} and {self.num_workers}.")
        if not 0 < self.val_fraction < 1:
            raise AgiqaError(f"val_fraction must lie in (0, 1), got {self.val_fraction}.")
        object.__setattr__(self, "feature_scale", checked_feature_scale(self.feature_scale))
        if self.text_feature_scale is not None:
            object.__setattr__(self, "text_feature_scale",
                               checked_feature_scale(self.text_feature_scale))
        if self.fast:
            object.__setattr__(self, "epochs", min(self.epochs, FAST_EPOCHS))
            object.__setattr__(self, "n_aug_views", min(self.n_aug_views, FAST_AUG_VIEWS))

    @property
    def trains_released_beside(self) -> bool:
        """Whether the study also trains the released recipe on the same features."""
        return self.compare_released and self.recipe != "released"

    def released_recipe(self) -> ClipStudyConfig:
        """This study (data, device, seed, outputs) with the released recipe in every setting
        the recipe decides."""
        return dataclasses.replace(self, recipe="released", compare_released=False,
                                   **dict.fromkeys(CLIP_RECIPES["released"]))

    @property
    def fresh_views(self) -> bool:
        """Whether training draws fresh views every epoch (the released path)."""
        return self.augmentation == "fresh"

    @property
    def augmentation_label(self) -> str:
        """How training views were made, as result records say it: "fresh_per_epoch" or
        "cached:K"."""
        return "fresh_per_epoch" if self.fresh_views else f"cached:{self.n_aug_views}"

    @property
    def scale_tag(self) -> str:
        """"_scale{s}" in file and folder names when `feature_scale` is not the released 1.0,
        "_text{u}" after it when `text_feature_scale` is set, else "" (the released runs keep
        their names)."""
        tag = "" if self.feature_scale == 1.0 else f"_scale{self.feature_scale:g}"
        if self.text_feature_scale is not None:
            tag += f"_text{self.text_feature_scale:g}"
        return tag

    def model_config(self, use_text: bool = True) -> ClipAgiqaConfig:
        """The CLIP-AGIQA architecture this study trains (or its image-only control)."""
        return ClipAgiqaConfig(use_text=use_text, frozen_precision=self.precision,
                               feature_scale=self.feature_scale,
                               text_feature_scale=self.text_feature_scale)

    def train_config(self) -> TrainConfig:
        """The optimisation recipe of this study (released defaults, our epochs and seed)."""
        return TrainConfig(epochs=self.epochs, seed=self.seed)

    def clip_kwargs(self) -> dict:
        """What `backbones.clip.create_clip` needs beyond profile, device and precision:
        a local checkpoint, or `pretrained=None` for random weights."""
        if self.clip_checkpoint is not None:
            return {"checkpoint": self.clip_checkpoint}
        if self.random_weights:
            return {"pretrained": None}
        return {}
