"""MA-AGIQA: IQA backbone tokens -> MANIQA quality feature f * w -> MoE fusion with MLLM vectors.

Profiles (what differs from the released `full` model is listed here and set in
`agiqa_lib.core.profiles`):

- ``full``: ViT-B/8 blocks 6-9 (3072 x 28 x 28), fine-tuned end to end with the released
  MANIQA (TABlocks over 784 tokens, widths 768 / 384, window 4) and fusion (D = 4096).
- ``lite`` (CPU): frozen EfficientNet-Lite0 tokens (cached) of each image read at its
  dataset's own side up to 512 px (`image_size`; `full` reads 224), average-pooled from 28 x 28
  to 14 x 14 (196 tokens, so the quality feature is 196-d); a 1x1 conv to 128 channels precedes
  stage 1 (full applies TABlocks to the 3072 backbone channels directly); widths 64 / 32,
  Swin MLP 128, window 2 (same 7 x 7 windows per side as full's window 4 on 28 x 28);
  D = 384 from the MiniLM stand-in encoder. Depths, heads, TABlock count, residual scale,
  dropouts and the gate are as released.
- ``tiny``: random, small, for tests (4 x 4 grid).

Variants: ``maniqa`` (MANIQA alone: sum(f * w) / sum(w), no MLLM) and the fusion variants of
`models.moe.FUSION_VARIANTS` (``released_gate``, ``softmax_gate``, ``semantic_only``,
``coherence_only``, ``concat_mlp``).

A checkpoint's config also records how the model was made and what scoring new images needs:
the image `resize` and `image_size` it was trained with (`released_cv2` or `pil`, 224 as
released or larger for `lite`; the scorer applies the same),
`weights` ("random" for a pipeline check) and `semantic_source` with `mllm_model_id` (the MLLM
hub id or folder, or the official vectors, whose model, mPLUG-Owl2-LLaMA2-7B, must then be
available to score new images).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.ma_agiqa.maniqa import Maniqa, ManiqaConfig
from agiqa_lib.ma_agiqa.moe import FUSION_VARIANTS, FusionConfig, FusionOutput, MoEFusion

VARIANTS = ("maniqa", *FUSION_VARIANTS)
BACKBONE_GRID = 28  # every IQA backbone profile gives 28 x 28 = 784 tokens


@dataclass(frozen=True)
class MAAGIQAConfig:
    """Everything needed to rebuild an MA-AGIQA model (stored in checkpoints as JSON)."""

    profile: str
    variant: str
    maniqa: ManiqaConfig
    fusion: FusionConfig | None          # None: MANIQA alone
    train_backbone: bool                 # full fine-tunes the ViT; lite/tiny freeze it
    mllm_model_id: str | None = None     # which MLLM made the vectors (full; official vectors)
    resize: str = "pil"                  # image resize: released_cv2 (full) or pil
    image_size: int = 224                # square side the backbone reads (lite: up to 512)
    weights: str = "pretrained"          # "random": full architecture, random weights
    semantic_source: str = "mllm"        # mllm, or official (the released .pt vectors)

    def to_json(self) -> str:
        """JSON text of this config."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike | None = None,
                  metadata: dict[str, str] | None = None) -> "MAAGIQAConfig":
        """Inverse of `to_json`; unknown or missing keys and bad JSON are AgiqaErrors naming
        the checkpoint `path` and the version that wrote it (`metadata`)."""
        from agiqa_lib.core.checkpoints import config_from_json

        return config_from_json(cls, text, path, metadata)


class MAAGIQA(nn.Module):
    """IQA backbone + MANIQA + (optional) MoE fusion; `forward` scores images."""

    def __init__(self, cfg: MAAGIQAConfig, backbone: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.maniqa = Maniqa(cfg.maniqa)
        self.fusion = MoEFusion(cfg.fusion) if cfg.fusion is not None else None
        self.backbone.requires_grad_(cfg.train_backbone)

    @property
    def needs_semantic(self) -> bool:
        """Whether forward needs the MLLM vectors (every variant but MANIQA alone)."""
        return self.fusion is not None

    def train(self, mode: bool = True) -> "MAAGIQA":
        """Like nn.Module.train, but a frozen backbone always stays in eval mode."""
        super().train(mode)
        if not self.cfg.train_backbone:
            self.backbone.eval()
        return self

    def image_transform(self) -> Callable:
        """The preprocessing this model reads images with: its backbone's, at the config's
        `resize` and `image_size` (training, evaluation and the scorer all use it)."""
        return self.backbone.transform(False, resize=self.cfg.resize, size=self.cfg.image_size)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone tokens [B, C, grid * grid], average-pooled when MANIQA's grid is coarser."""
        x = self.backbone(images)  # [B, C, 784]
        g = self.cfg.maniqa.grid
        if g != BACKBONE_GRID:
            x = F.adaptive_avg_pool2d(x.unflatten(2, (BACKBONE_GRID, BACKBONE_GRID)), g)
            x = x.flatten(2)
        return x

    def forward_tokens(self, tokens: torch.Tensor,
                       semantic: torch.Tensor | None = None) -> FusionOutput:
        """Score from tokens [B, C, N] and semantic vectors [B, 2, D] (unused by MANIQA alone)."""
        out = self.maniqa(tokens.float())
        if self.fusion is None:
            return FusionOutput(out.score, None)
        if semantic is None:
            raise AgiqaError(f"variant {self.cfg.variant!r} needs the MLLM semantic vectors")
        return self.fusion(out.feature, semantic)

    def forward(self, images: torch.Tensor,
                semantic: torch.Tensor | None = None) -> FusionOutput:
        """Score images [B, 3, S, S] (`backbone.transform`, S = `cfg.image_size`)."""
        return self.forward_tokens(self.tokens(images), semantic)


def ma_agiqa_config(profile: str = "lite", variant: str = "released_gate",
                    in_channels: int = 3072, semantic_dim: int | None = None,
                    clean_tablock: bool = False, mllm_model_id: str | None = None,
                    resize: str = "pil", weights: str = "pretrained",
                    semantic_source: str = "mllm", image_size: int = 224) -> MAAGIQAConfig:
    """The MAAGIQAConfig of a profile and variant (`in_channels`: the backbone's channels)."""
    settings = get_profile(profile)
    if variant not in VARIANTS:
        raise AgiqaError(f"unknown MA-AGIQA variant {variant!r}; choose one of "
                         f"{', '.join(VARIANTS)}")
    maniqa = ManiqaConfig(in_channels=in_channels, clean_tablock=clean_tablock,
                          **settings.maniqa)
    fusion = None
    if variant != "maniqa":
        questions, gate = FUSION_VARIANTS[variant]
        fusion = FusionConfig(feature_dim=maniqa.num_tokens,
                              semantic_dim=semantic_dim or settings.semantic_dim,
                              questions=questions, gate=gate, drop=maniqa.drop)
    return MAAGIQAConfig(profile, variant, maniqa, fusion, train_backbone=settings.train_iqa_backbone,
                         mllm_model_id=mllm_model_id, resize=resize, weights=weights,
                         semantic_source=semantic_source, image_size=image_size)


def create_ma_agiqa(profile: str = "lite", variant: str = "released_gate",
                    pretrained: bool = True, semantic_dim: int | None = None,
                    clean_tablock: bool = False, mllm_model_id: str | None = None,
                    device: str = "cpu") -> MAAGIQA:
    """Build MA-AGIQA for a weight profile and variant (backbone weights when `pretrained`)."""
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

    backbone = create_iqa_backbone(profile, pretrained=pretrained)
    cfg = ma_agiqa_config(profile, variant, backbone.out_channels, semantic_dim,
                          clean_tablock, mllm_model_id)
    return MAAGIQA(cfg, backbone).to(device)


def build_from_config(cfg: MAAGIQAConfig, pretrained: bool = False) -> MAAGIQA:
    """Rebuild the architecture of `cfg` (random heads; backbone weights when `pretrained`)."""
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

    return MAAGIQA(cfg, create_iqa_backbone(cfg.profile, pretrained=pretrained))


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: MAAGIQA, path: str | os.PathLike,
                    extra_metadata: dict[str, str] | None = None) -> Path:
    """Save all weights (backbone included) as safetensors with the config in the metadata.

    Written by `core.checkpoints.write_checkpoint`: records the library version and refuses
    NaN/inf weights.
    """
    from agiqa_lib.core.checkpoints import write_checkpoint

    metadata = {"agiqa_model": "ma_agiqa", "profile": model.cfg.profile,
                "variant": model.cfg.variant, "config": model.cfg.to_json(),
                "weights": model.cfg.weights, **(extra_metadata or {})}
    # clone: safetensors refuses tensors that share storage
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return write_checkpoint(path, tensors, metadata)


def load_model(path: str | os.PathLike, device: str = "cpu") -> MAAGIQA:
    """Rebuild the model saved by `save_checkpoint` (strict: every weight must match).

    Bad config JSON, unknown config keys and NaN/inf weights are AgiqaErrors naming the file
    and the version that wrote it.
    """
    from agiqa_lib.core.checkpoints import read_checkpoint

    tensors, meta = read_checkpoint(path)
    if meta.get("agiqa_model") != "ma_agiqa" or "config" not in meta:
        raise AgiqaError(f"{path} is not an MA-AGIQA checkpoint (metadata agiqa_model="
                         f"{meta.get('agiqa_model')!r}); pass a file saved by notebook 04")
    model = build_from_config(MAAGIQAConfig.from_json(meta["config"], path, meta),
                              pretrained=False)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise AgiqaError(f"{path} does not match the MA-AGIQA architecture it names "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); re-save it")
    return model.to(device).eval()


class MAAGIQAScorer:
    """Scores PIL images with a trained MA-AGIQA: backbone transform + MLLM vectors + model.

    `checkpoint` names the file the model came from, for messages about its predictions.
    """

    def __init__(self, model: MAAGIQA, encoder=None, device: str = "cpu", batch_size: int = 8,
                 checkpoint: str = ""):
        self.model = model.to(device).eval()
        self.encoder = encoder
        self.device = device
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.transform = model.image_transform()

    def semantic_vectors(self, images: list[Image.Image]) -> torch.Tensor:
        """[B, 2, D] MLLM vectors for the two MA-AGIQA questions."""
        from agiqa_lib.ma_agiqa.semantic import QUESTIONS

        with torch.inference_mode():
            vectors = [self.encoder.encode(images, QUESTIONS[q]).float().cpu()
                       for q in ("semantic_content", "coherence")]
        return torch.stack(vectors, dim=1)

    @torch.inference_mode()
    def score_images(self, images: list[Image.Image]) -> np.ndarray:
        """One predicted MOS per image (any PIL mode, converted by `core.io.to_rgb`)."""
        from agiqa_lib.core.features import auto_batch_size
        from agiqa_lib.core.io import to_rgb

        # the backbone's own batch: on a CPU a few images of its side at a time (1 at 512 px),
        # as extraction does (`core.features.auto_batch_size`); the MLLM keeps `batch_size`
        chunk = auto_batch_size(None, self.device, self.batch_size, side=self.model.cfg.image_size)
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch = [to_rgb(im) for im in images[start:start + self.batch_size]]
            semantic = (self.semantic_vectors(batch).to(self.device)
                        if self.model.needs_semantic else None)
            for first in range(0, len(batch), chunk):
                pixels = torch.stack([self.transform(im) for im in batch[first:first + chunk]])
                part = None if semantic is None else semantic[first:first + chunk]
                scores.append(self.model(pixels.to(self.device), part).score.float().cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0)


def mllm_source(model_id: str | None) -> str | None:
    """A recorded MLLM id as `create_mllm` takes it: the `local:` / `hf:` prefixes of stable
    cache ids (what older checkpoints stored) are dropped."""
    if model_id is None:
        return None
    for prefix in ("local:", "hf:"):
        if model_id.startswith(prefix):
            return model_id[len(prefix):]
    return model_id


def load_scorer(checkpoint_path: str | os.PathLike, device: str = "cpu") -> MAAGIQAScorer:
    """A scorer from a notebook-04 checkpoint; builds the MLLM that made its training vectors.

    A model trained on the official MA-AGIQA vectors needs their model, the full
    mPLUG-Owl2-LLaMA2-7B, to score new images; when it cannot be loaded the AgiqaError says so.
    """
    model = load_model(checkpoint_path, device)
    encoder = None
    if model.needs_semantic:
        from agiqa_lib.backbones.mllm import DEFAULT_FULL_MODEL, create_mllm
        from agiqa_lib.ma_agiqa.semantic import OFFICIAL_MODEL_ID

        cfg = model.cfg
        if cfg.semantic_source == "official" or cfg.mllm_model_id == OFFICIAL_MODEL_ID:
            try:
                encoder = create_mllm("full", model_id=DEFAULT_FULL_MODEL, device=device)
            except AgiqaError as err:
                raise AgiqaError(
                    f"{checkpoint_path} was trained on the official MA-AGIQA semantic vectors "
                    f"(released .pt files, made by mPLUG-Owl2-LLaMA2-7B); scoring new images "
                    f"needs that model to make their vectors, and it is not available here: "
                    f"{err}") from None
        else:
            encoder = create_mllm(cfg.profile, device=device,
                                  model_id=mllm_source(cfg.mllm_model_id)
                                  if cfg.profile == "full" else None)
        if encoder.dim != cfg.fusion.semantic_dim:
            raise AgiqaError(f"{checkpoint_path} was trained on {cfg.fusion.semantic_dim}-d "
                             f"semantic vectors but the {cfg.profile} MLLM gives {encoder.dim}")
    return MAAGIQAScorer(model, encoder, device, checkpoint=str(checkpoint_path))
