"""`MAStudyConfig`: every setting of the MA-AGIQA study (notebook 04, `agiqa train-ma`).

Settings left to the profile (`"auto"`) are resolved from the profile table when the config is
built: `resize` is `released_cv2` for `full` (MA-AGIQA's OpenCV INTER_CUBIC loading) and `pil`
for `lite`/`tiny`. `image_size` left at None is resolved when the data is prepared
(`data.prepare_data`): 224 as released for `full`/`tiny`, the dataset's own side (224-512) for
`lite`. `val_selection` chooses how the best epoch is picked: `corrected` (the
default for every profile: every val image, the best SRCC + PLCC whatever its sign) or
`as_released` (the release's val loader drops its last partial batch of 8, `main.py:264-265`,
and its best score starts at 0, `main.py:289/301`, so an epoch with val SRCC + PLCC <= 0 is
never chosen). The corrected rule stays the default because it selects on every val image and
always selects an epoch (a released run whose val score never exceeds 0 saves no checkpoint
and its test step fails); both are recorded (`selection` best_on_val vs
best_on_val_as_released).

`semantic_source` says where the semantic vectors come from: `mllm` (the profile's MLLM;
`mllm_model_id` picks another for `full`; `weights="random"`: the tiny random mPLUG-Owl2 read
through the `full` loader), `official:DIR` (MA-AGIQA's released per-image `.pt` vectors,
imported into the semantic cache), or any other text, read as an MLLM hub id or folder
(`full` only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agiqa_lib.backbones.iqa_backbone import check_image_size
from agiqa_lib.core.config import PRECISIONS, StudyConfig, auto_option, option
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.ma_agiqa.model import VARIANTS

FAST_EPOCHS = 2  # `fast=True`: a smoke run (and `StudyConfig`'s images, bootstrap)
FLIPS = ("as_released", "horizontal")
RESIZES = ("released_cv2", "pil")
VAL_SELECTIONS = ("corrected", "as_released")
OFFICIAL_PREFIX = "official:"


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
    val_selection: str = "corrected"  # or "as_released": val drop_last, best score from 0
    max_steps_per_epoch: int | None = None  # smoke tests only; None: every batch (released)


def train_config(profile: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a profile (its departures from the release, see `core.profiles`),
    with `overrides` (None values ignored) applied."""
    settings = {**get_profile(profile).ma_training,
                **{k: v for k, v in overrides.items() if v is not None}}
    cfg = replace(TrainConfig(), **settings)
    if cfg.flip not in FLIPS:
        raise AgiqaError(f"flip must be one of {FLIPS}, got {cfg.flip!r}")
    if cfg.val_selection not in VAL_SELECTIONS:
        raise AgiqaError(f"val_selection must be one of {VAL_SELECTIONS}, got "
                         f"{cfg.val_selection!r}")
    if cfg.epochs < 1 or cfg.lr <= 0 or cfg.batch_size < 1:
        raise AgiqaError(f"epochs and batch_size must be >= 1 and lr > 0, got {cfg.epochs}, "
                         f"{cfg.batch_size} and {cfg.lr}")
    if cfg.max_steps_per_epoch is not None and cfg.max_steps_per_epoch < 1:
        raise AgiqaError(f"max_steps_per_epoch must be >= 1 (or None), got "
                         f"{cfg.max_steps_per_epoch}")
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
    resize: str = option("auto", "image resize to 224: released_cv2 (the release: cv2.imread, "
                                 "INTER_CUBIC, no antialiasing) or pil (PIL bicubic); auto: "
                                 "the profile's (full released_cv2, lite/tiny pil)",
                         choices=("auto", *RESIZES))
    image_size: int | None = option(None, "square side the IQA backbone reads (default: the "
                                          "profile's: full/tiny 224 as released; lite the "
                                          "dataset's own image side, 224 to 512)")
    val_selection: str = option("corrected", "best-epoch rule: corrected (every val image, "
                                             "best SRCC+PLCC) or as_released (val loader drops "
                                             "its last partial batch, best score starts at 0)",
                                choices=VAL_SELECTIONS)
    semantic_source: str = option("mllm", "semantic vectors: mllm (the profile's MLLM, or "
                                          "mllm_model_id), official:DIR (MA-AGIQA's released "
                                          "per-image .pt vectors in DIR), or an MLLM hub id or "
                                          "folder (full only)")
    mllm_model_id: str | None = option(None, "full only: MLLM hub id or local folder for "
                                             "the semantic vectors (default "
                                             "MAGAer13/mplug-owl2-llama2-7b)")
    vit_checkpoint: str | None = option(None, "full only: local ViT-B/8 weights instead of the "
                                              "hub download (timm model.safetensors / .pth, or "
                                              "the augreg .npz)")
    batch_size: int | None = option(None, "training batch size (default: the released 8)")
    max_steps_per_epoch: int | None = option(None, "stop each training epoch after N steps "
                                                   "(smoke tests of full on a CPU; default: "
                                                   "every batch, as released)")

    def __post_init__(self) -> None:
        profile = get_profile(self.profile)
        object.__setattr__(self, "resize", auto_option(self.resize, profile.ma_resize))
        super().__post_init__()
        if self.precision not in PRECISIONS:
            raise AgiqaError(f"precision must be one of {', '.join(PRECISIONS)} for MA-AGIQA "
                             f"(the release trains in fp32), got {self.precision!r}.")
        if self.resize not in RESIZES:
            raise AgiqaError(f"resize must be auto or one of {', '.join(RESIZES)}, got "
                             f"{self.resize!r}.")
        if self.image_size is not None:
            check_image_size(self.profile, self.image_size)
        source = str(self.semantic_source)
        if source.startswith(OFFICIAL_PREFIX) and not source[len(OFFICIAL_PREFIX):].strip():
            raise AgiqaError("semantic_source='official:DIR' needs the folder of the released "
                             "{stem}_semantic_content.pt / {stem}_coherence.pt files after the "
                             "colon, e.g. official:/data/mplug_tensor/AGIQA_3k.")
        if self.profile != "full":
            for name in ("mllm_model_id", "vit_checkpoint"):
                if getattr(self, name) is not None:
                    raise AgiqaError(f"{name} (--{name.replace('_', '-')}) is read by profile "
                                     f"'full' only, not {self.profile!r}.")
            if source not in ("mllm",) and not source.startswith(OFFICIAL_PREFIX):
                raise AgiqaError(f"semantic_source={source!r} names an MLLM, which profile "
                                 f"{self.profile!r} cannot load; use mllm (its own) or "
                                 "official:DIR, or profile full.")
        if self.mllm_model_id is not None and source not in ("mllm",):
            raise AgiqaError(f"pass either mllm_model_id={self.mllm_model_id!r} or "
                             f"semantic_source={source!r}, not both.")
        if self.vit_checkpoint is not None and self.random_weights:
            raise AgiqaError("vit_checkpoint and weights='random' exclude each other: a "
                             "checkpoint holds real weights.")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise AgiqaError(f"unknown or no variants {unknown}: choose from {', '.join(VARIANTS)}.")
        if not self.seeds:
            raise AgiqaError("seeds must name at least one training seed.")
        if self.fast:
            object.__setattr__(self, "epochs", min(self.epochs or FAST_EPOCHS, FAST_EPOCHS))
        self.train_config(self.seeds[0], device="cpu")  # validates the recipe

    @property
    def needs_semantic(self) -> bool:
        """Whether any variant fuses the MLLM vectors (all but MANIQA alone)."""
        return any(v != "maniqa" for v in self.variants)

    @property
    def official_vectors_dir(self) -> str | None:
        """The folder of the released vectors when `semantic_source` is official:DIR."""
        source = str(self.semantic_source)
        return source[len(OFFICIAL_PREFIX):] if source.startswith(OFFICIAL_PREFIX) else None

    def mllm_source(self) -> str | None:
        """Which MLLM makes the semantic vectors (`create_mllm(profile, model_id=...)`): None
        for the profile's default; for `full` the hub id or folder asked for, or with
        `weights="random"` the tiny random mPLUG-Owl2 (built into the cache on first use)."""
        if self.profile != "full" or self.official_vectors_dir is not None:
            return None
        if self.semantic_source != "mllm":
            return str(self.semantic_source)
        if self.mllm_model_id is not None:
            return self.mllm_model_id
        if self.random_weights:
            from agiqa_lib.backbones.weights import random_mllm_source

            return random_mllm_source()
        return None

    def train_config(self, seed: int, device: str | None = None) -> TrainConfig:
        """The optimisation recipe of one run: the profile's, with this study's overrides."""
        return train_config(self.profile, epochs=self.epochs, lr=self.lr, seed=seed,
                            flip=self.flip, batch_size=self.batch_size,
                            val_selection=self.val_selection,
                            max_steps_per_epoch=self.max_steps_per_epoch,
                            device=device or str(self.torch_device))
