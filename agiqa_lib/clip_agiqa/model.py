"""CLIP-AGIQA (Tang et al., ICPR 2024) as the released code builds it.

Both CLIP encoders are frozen. A CoOp prompt learner holds 16 context vectors (random
N(0, 0.02), shared by all classes unless `class_specific_context`) that replace the "X"
placeholders of "X X ... X {class}." for the six quality words. The L2-normalised image
feature and the six L2-normalised text features are concatenated (7 x D) and regressed to
the MOS by Dropout -> Linear(7D, 512) -> ReLU -> Dropout -> Linear(512, 1).

Because the text features do not depend on the image, at test time the model is an MLP on
the image feature whose first-layer bias is shifted by the (learned) text features; the
image-only control (`use_text=False`) drops them to test whether the prompts matter.

Reference: wzczc/CLIP-AGIQA, trainers/clip_agiqa.py (CustomCLIP, PromptLearner). Its
ViT-B/16 config also lists CTX_INIT "a photo of a"; the README's command (`end 16 1 False`)
and the paper use 16 random context vectors, which is what we build.

Feature scale (`feature_scale`, a lite option; 1.0 is the release): the head input is
multiplied by it before the first Linear. Unit-norm features put each of the 7D inputs at
about 1/sqrt(D), so with the released SGD lr 0.002 the head learns slowly and, on `lite`
(D = 512), underfits (predictions in a narrow band); sqrt(D) restores inputs of order 1. In
eval mode a scale s equals the scale-1 model whose first head Linear weight is multiplied by
s, so it changes the optimisation only, not what the model can express.
`text_feature_scale` (None: the same as `feature_scale`) scales the six text features apart:
they are the same for every image, so at S = sqrt(D) their 6D inputs outweigh the image's D,
and the head's input dropout turns them into image-independent noise about six times the
image part's; the lite setting chosen on the validation part keeps them at unit norm (1.0) and
scales the image feature only (README, "The `lite` CLIP-AGIQA setting").

Precision (`frozen_precision`):

- ``fp16_as_released``: the release's default (`train.py:111` PREC "fp16"; `clip_model.float()`
  only for fp32/amp, `trainers/clip_agiqa.py:265-267`). CLIP stays in OpenAI's fp16 (see
  `backbones.clip.cast_frozen_clip`); the context vectors are an fp16 `nn.Parameter`
  (`clip_agiqa.py:86-89`, `dtype=clip_model.dtype`), so SGD updates them in fp16 with fp16
  momentum; image and text features are L2-normalised in fp16 and only then cast to fp32
  (`clip_agiqa.py:208-223`); the regression head is fp32 (built after the cast, never
  converted). Slow or missing on CPU: `ClipStudyConfig` refuses it there and `load_checkpoint`
  scores such a checkpoint in fp32 on CPU (with a warning).
- ``fp16`` / ``bf16``: the same low-precision encoders, but fp32 context vectors (cast at use)
  and fp32 normalisation: a corrected mixed precision.
- ``fp32`` (the default off CUDA) and None (keep the CLIP as its bundle was built).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from agiqa_lib.clip_agiqa.binning import QUALITY_CLASSES
from agiqa_lib.core.checkpoints import (config_from_json, parse_json_field, read_checkpoint,
                                        write_checkpoint, written_by)
from agiqa_lib.core.config import CLIP_PRECISIONS, FP16_AS_RELEASED, precision_dtype
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import to_rgb



@dataclass
class ClipAgiqaConfig:
    """Architecture of CLIP-AGIQA's trainable part (the CLIP itself is named separately)."""

    class_names: tuple[str, ...] = QUALITY_CLASSES
    n_ctx: int = 16
    class_specific_context: bool = False
    ctx_init_std: float = 0.02
    use_text: bool = True  # False: the image-only control (same head, no text features)
    hidden_dim: int = 512
    dropout: float = 0.5
    # fp32 | fp16 | bf16 | fp16_as_released (see the module docstring); None: keep the
    # precision the CLIP was built in (resolved when the model is built)
    frozen_precision: str | None = None
    # the L2-normalised head input is multiplied by this before the head (a lite option, see
    # the module docstring); 1.0: as released (`clip_agiqa.py:214-223` feeds unit vectors)
    feature_scale: float = 1.0
    # the text features' own scale (None: `feature_scale`, as both were scaled before the
    # option existed); 1.0 with feature_scale sqrt(D) scales the image feature only
    text_feature_scale: float | None = None

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        self.feature_scale = checked_feature_scale(self.feature_scale)
        if self.text_feature_scale is not None:
            self.text_feature_scale = checked_feature_scale(self.text_feature_scale)
        if self.frozen_precision is not None and self.frozen_precision not in CLIP_PRECISIONS:
            raise AgiqaError(f"frozen_precision={self.frozen_precision!r} is not one of "
                             f"{sorted(CLIP_PRECISIONS)}")
        if self.n_ctx < 1:
            raise AgiqaError(f"n_ctx must be >= 1, got {self.n_ctx}")

    def stored_fields(self) -> dict[str, Any]:
        """The fields as checkpoints and run digests record them: `feature_scale` only when it
        is not the released 1.0 and `text_feature_scale` only when set, so that default
        configs keep the form earlier versions wrote."""
        fields = asdict(self)
        if fields["feature_scale"] == 1.0:
            del fields["feature_scale"]
        if fields["text_feature_scale"] is None:
            del fields["text_feature_scale"]
        return fields

    @property
    def text_scale(self) -> float:
        """The factor the text features are multiplied by (`text_feature_scale`, or
        `feature_scale` when it is None)."""
        return self.feature_scale if self.text_feature_scale is None else self.text_feature_scale


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x * scale`, and `x` itself at 1.0 (the release, bit for bit)."""
    return x if scale == 1.0 else x * scale


def checked_feature_scale(value: Any) -> float:
    """`feature_scale` as a float; anything but a finite number > 0 is an AgiqaError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise AgiqaError(f"feature_scale must be a finite number > 0 (1.0 as released), got "
                         f"{value!r}.")
    return float(value)


class PromptLearner(nn.Module):
    """CoOp context vectors inserted after the start token of "X X ... X {class}."."""

    def __init__(self, text_tower: Any, class_names: tuple[str, ...], n_ctx: int = 16,
                 class_specific: bool = False, init_std: float = 0.02,
                 ctx_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        # [n_cls, L]: the placeholders checked, cut after the longest prompt (exact, and
        # ~4x cheaper per training step: about 20 of 77 positions are used)
        ids = text_tower.trimmed(text_tower.placeholder_prompts(class_names, n_ctx))
        with torch.no_grad():
            embeds = text_tower.token_embedding(ids)  # [n_cls, L, W]
        shape = (len(class_names), n_ctx, text_tower.width) if class_specific else (n_ctx, text_tower.width)
        # fp32 unless fp16_as_released (the release: torch.empty(..., dtype=clip_model.dtype))
        self.ctx = nn.Parameter(torch.empty(shape, dtype=ctx_dtype).normal_(std=init_std))
        # Rebuilt from the class names on load, so not part of the state dict.
        self.register_buffer("token_prefix", embeds[:, :1].clone(), persistent=False)  # start token
        self.register_buffer("token_suffix", embeds[:, 1 + n_ctx:].clone(), persistent=False)  # class, ".", end
        self.register_buffer("tokenized_prompts", ids.clone(), persistent=False)
        self.class_names = tuple(class_names)
        self.n_ctx = n_ctx

    def forward(self) -> torch.Tensor:
        """Prompt token embeddings [n_cls, L, W] with the context in place of the X's."""
        n_cls = self.token_prefix.shape[0]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(n_cls, -1, -1)
        ctx = ctx.to(self.token_prefix.dtype)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


def _clip_dtype(clip_model: nn.Module) -> torch.dtype:
    """The dtype a frozen CLIP computes in (`backbones.clip.encoder_dtype`)."""
    from agiqa_lib.backbones.clip import encoder_dtype

    return encoder_dtype(clip_model)


def _precision_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def regression_head(in_dim: int, hidden_dim: int = 512, dropout: float = 0.5) -> nn.Sequential:
    """The released regressor: Dropout -> Linear -> ReLU -> Dropout -> Linear(., 1)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden_dim, 1))


class ClipAgiqa(nn.Module):
    """Frozen CLIP + learnable prompts + regression head; predicts the raw MOS."""

    def __init__(self, clip_model: nn.Module, text_tower: Any, embed_dim: int,
                 config: ClipAgiqaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClipAgiqaConfig()
        self.clip = clip_model.requires_grad_(False).eval()
        self.text_tower = text_tower
        self.embed_dim = embed_dim
        if config.frozen_precision is None:  # keep the CLIP's own precision
            config.frozen_precision = _precision_name(_clip_dtype(self.clip))
        ctx_dtype = torch.float16 if config.frozen_precision == FP16_AS_RELEASED else torch.float32
        self.prompt_learner = (PromptLearner(text_tower, config.class_names, config.n_ctx,
                                             config.class_specific_context, config.ctx_init_std,
                                             ctx_dtype) if config.use_text else None)
        n_text = len(config.class_names) if config.use_text else 0
        self.regression = regression_head((1 + n_text) * embed_dim, config.hidden_dim, config.dropout)
        self.set_frozen_precision(config.frozen_precision)

    def set_frozen_precision(self, precision: str) -> None:
        """Cast the frozen encoders (and the fixed prompt tokens) to fp32, fp16 or bf16
        (`backbones.clip.cast_frozen_clip`: OpenAI's mixed fp16 for the full CLIP).

        The CLIP is shared with its bundle (and any other model built on it), so they follow;
        nothing is cast when it already computes in that dtype. The context vectors keep
        their dtype (fp16 only for `fp16_as_released`, set when the model is built).
        """
        from agiqa_lib.backbones.clip import cast_frozen_clip

        dtype = precision_dtype(precision)
        if _clip_dtype(self.clip) != dtype:
            cast_frozen_clip(self.clip, precision)
        if self.prompt_learner is not None:
            self.prompt_learner.token_prefix = self.prompt_learner.token_prefix.to(dtype)
            self.prompt_learner.token_suffix = self.prompt_learner.token_suffix.to(dtype)
        self.config.frozen_precision = precision

    @property
    def frozen_dtype(self) -> torch.dtype:
        return precision_dtype(self.config.frozen_precision)

    @property
    def as_released_precision(self) -> bool:
        """Whether features are normalised in fp16 as released (`fp16_as_released`)."""
        return self.config.frozen_precision == FP16_AS_RELEASED

    def _normalize(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised fp32 features: in fp32, or as released (`clip_agiqa.py:214-223`):
        `x / x.norm(dim=-1, keepdim=True)` in fp16, then `.to(torch.float32)`."""
        if self.as_released_precision:
            x = features.to(torch.float16)
            return (x / x.norm(dim=-1, keepdim=True)).to(torch.float32)
        return F.normalize(features.float(), dim=-1)

    def train(self, mode: bool = True) -> ClipAgiqa:
        """Train mode for the trainable parts only: the frozen CLIP always stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP image features [B, D] (not normalised, fp32): what the cache stores."""
        return self.clip.encode_image(images.to(self.frozen_dtype)).float()

    def text_features(self) -> torch.Tensor | None:
        """L2-normalised text features of the learned prompts [n_cls, D] (None if no text)."""
        if self.prompt_learner is None:
            return None
        prompts = self.prompt_learner()
        feats = self.text_tower.encode_with_embeddings(prompts, self.prompt_learner.tokenized_prompts)
        return self._normalize(feats)

    def score_features(self, image_features: torch.Tensor,
                       text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted MOS [B] from image features [B, D]; text features recomputed unless given.

        The head reads the normalised image feature (and the six normalised text features,
        as released: `clip_agiqa.py:214-223`) times `config.feature_scale` (the text features
        times `config.text_scale`; 1.0: as released, no multiplication; sqrt(D) gives inputs
        of order 1, see the module docstring).
        """
        x = self._normalize(image_features)  # [B, D] fp32
        if self.prompt_learner is None:
            return self.regression(_scaled(x, self.config.feature_scale)).squeeze(-1)
        text = self.text_features() if text_features is None else text_features  # [n_cls, D]
        apart = self.config.text_feature_scale is not None
        if apart:
            x, text = _scaled(x, self.config.feature_scale), _scaled(text, self.config.text_scale)
        x = torch.cat([x.unsqueeze(1), text.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = x.flatten(1)  # [B, (1 + n_cls) * D]
        # one scale for both: applied after the concatenation, as before `text_feature_scale`
        # existed (the same gradients bit for bit, so those runs train as they did)
        return self.regression(x if apart else _scaled(x, self.config.feature_scale)).squeeze(-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted MOS [B] from preprocessed images [B, 3, H, W]."""
        return self.score_features(self.encode_image(images))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the context vectors and the head."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load context + head weights; every trainable tensor must be present with its shape."""
        own = dict((n, p) for n, p in self.named_parameters() if p.requires_grad)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise AgiqaError(f"checkpoint does not match this CLIP-AGIQA model (missing "
                             f"{missing}, unexpected {unexpected}); was it trained with another "
                             "config or profile?")
        with torch.no_grad():
            for name, param in own.items():
                if state[name].shape != param.shape:
                    raise AgiqaError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}"
                                     f", the model expects {tuple(param.shape)}")
                param.copy_(state[name])


def create_clip_agiqa(profile: str = "lite", config: ClipAgiqaConfig | None = None,
                      bundle: Any = None, device: str = "cpu", **clip_kwargs: Any) -> ClipAgiqa:
    """Build CLIP-AGIQA on a CLIP profile (full / lite / tiny); reuse `bundle` when given.

    `clip_kwargs` go to `create_clip` (arch, pretrained, checkpoint) and are remembered so a
    saved checkpoint can rebuild the same CLIP.
    """
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.backbones.text_tower import TextTower

    if bundle is None:
        precision = config.frozen_precision if config is not None else None
        bundle = create_clip(profile, device=device, precision=precision or "fp32", **clip_kwargs)
    model = ClipAgiqa(bundle.model, TextTower(bundle.model), bundle.embed_dim, config)
    model.bundle = bundle
    model.clip_kwargs = {"profile": bundle.profile, **clip_kwargs}
    return model.to(device)


def save_checkpoint(model: ClipAgiqa, path: str | os.PathLike,
                    extra_metadata: dict[str, Any] | None = None) -> Path:
    """Save the trainable weights + everything `load_scorer` needs, as safetensors (atomic).

    Written by `core.checkpoints.write_checkpoint`: records the library version and refuses
    NaN/inf weights.
    """
    bundle = getattr(model, "bundle", None)
    metadata = {
        "agiqa_model": "clip_agiqa",  # the image-only control is config use_text=False
        "profile": str(getattr(bundle, "profile", "")),
        "weights": str(getattr(bundle, "weights", "pretrained")),  # "random": a pipeline check
        "precision": str(model.config.frozen_precision),
        "config": json.dumps(model.config.stored_fields()),
        "clip_kwargs": json.dumps(getattr(model, "clip_kwargs", {})),
        "clip_model_id": str(getattr(bundle, "model_id", "")),
        "extra": json.dumps(extra_metadata or {}, default=str),
    }
    return write_checkpoint(path, model.trainable_state_dict(), metadata)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu", bundle: Any = None) -> ClipAgiqa:
    """Rebuild a CLIP-AGIQA model from `save_checkpoint`'s file (warns if the CLIP differs).

    Bad JSON, config keys this version does not know, options `create_clip` does not take and
    NaN/inf weights are AgiqaErrors naming the file and the version that wrote it. A model
    trained in fp16 (`fp16`, `fp16_as_released`) is scored in fp32 on a CPU, with a warning:
    PyTorch's CPU fp16 kernels are slow or missing, and the scores differ only by fp16 rounding.
    """
    from agiqa_lib.backbones.clip import create_clip

    tensors, meta = read_checkpoint(path)
    if meta.get("agiqa_model") != "clip_agiqa":
        raise AgiqaError(f"{path} holds agiqa_model={meta.get('agiqa_model')!r}, not a CLIP-AGIQA "
                         "checkpoint saved by notebook 02")
    config = config_from_json(ClipAgiqaConfig, parse_json_field(meta, "config", path), path, meta)
    clip_kwargs = parse_json_field(meta, "clip_kwargs", path, default={})
    known = set(inspect.signature(create_clip).parameters)
    unknown = sorted(set(clip_kwargs) - known) if isinstance(clip_kwargs, dict) else [clip_kwargs]
    if unknown:
        raise AgiqaError(f"checkpoint {path} (written by {written_by(meta)}) has 'clip_kwargs' "
                         f"{unknown} that this version's create_clip does not take (it knows "
                         f"{sorted(known)}); load it with the version that wrote it")
    profile = clip_kwargs.pop("profile", meta.get("profile", "lite"))
    if config.frozen_precision in ("fp16", FP16_AS_RELEASED) and torch.device(device).type == "cpu":
        warnings.warn(f"{path} was trained with {config.frozen_precision} encoders; on a CPU "
                      "they run in fp32 instead (scores differ by fp16 rounding only)",
                      RuntimeWarning, stacklevel=2)
        config.frozen_precision = "fp32"
    model = create_clip_agiqa(profile, config, bundle=bundle, device=device, **clip_kwargs)
    if meta.get("clip_model_id") and _strip_precision(model.bundle.model_id) != \
            _strip_precision(meta["clip_model_id"]):
        warnings.warn(f"{path} was trained on a CLIP whose weights differ from the one built now "
                      f"({meta['clip_model_id']} then, {model.bundle.model_id} now); scores may not "
                      "match the training run",
                      RuntimeWarning, stacklevel=2)
    model.load_trainable_state_dict(tensors)
    return model.to(device).eval()


def _strip_precision(model_id: str) -> str:
    """A CLIP model id without its precision suffix (the weights' identity)."""
    for suffix in (":fp16", ":bf16"):
        if model_id.endswith(suffix):
            return model_id[:-len(suffix)]
    return model_id


@dataclass
class ClipAgiqaScorer:
    """Scores PIL images with a trained CLIP-AGIQA (test-time preprocessing: resize + crop).

    `checkpoint` names the file the model came from, for messages about its predictions.
    """

    model: ClipAgiqa
    device: str = "cpu"
    checkpoint: str = ""
    _text: torch.Tensor | None = field(default=None, repr=False)

    @torch.no_grad()
    def score_images(self, images: list[Image.Image]) -> np.ndarray:
        """One predicted MOS per image (any PIL mode, converted by `core.io.to_rgb`)."""
        from agiqa_lib.core.features import auto_batch_size

        self.model.eval()
        if self._text is None and self.model.prompt_learner is not None:
            self._text = self.model.text_features()
        # on a CPU a few images at a time (4 at 224 px), as extraction does; a GPU takes them all
        preprocess, size = self.model.bundle.preprocess_val, self.model.bundle.image_size
        chunk = auto_batch_size(None, self.device, max(len(images), 1), side=size)
        feats = torch.cat([
            self.model.encode_image(torch.stack([preprocess(to_rgb(img)) for img in
                                                 images[start:start + chunk]]).to(self.device))
            for start in range(0, len(images), chunk)])
        return self.model.score_features(feats, self._text).cpu().numpy().astype(float)


def load_scorer(checkpoint_path: str | os.PathLike, device: str = "cpu") -> ClipAgiqaScorer:
    """The `agiqa score` entry point for checkpoints saved by notebook 02."""
    return ClipAgiqaScorer(load_checkpoint(checkpoint_path, device=device), device=device,
                           checkpoint=str(checkpoint_path))
