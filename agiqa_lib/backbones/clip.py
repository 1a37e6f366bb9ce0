"""CLIP models in three weight profiles, each with its own preprocessing and tokenizer.

- `full`: any open_clip architecture and pretrained tag (CLIP-AGIQA uses `ViT-B-16` / `openai`,
  loaded with QuickGELU as OpenAI trained it), or a local open_clip checkpoint: a state dict
  (`.pt`/`.bin`/`.safetensors`, e.g. `open_clip_pytorch_model.bin` of the hub repo
  `timm/vit_base_patch16_clip_224.openai`) read as a copy of `arch`/`pretrained`, or a folder
  holding `open_clip_config.json` and its weights. Hub weights need internet once.
  `pretrained=None` (`weights="random"`) builds the same architecture (QuickGELU and
  preprocessing of the `openai` tag) with seeded random weights, offline.
- `lite`: an open_clip `CustomTextCLIP` built offline from registry packages: a timm
  `tf_efficientnet_lite0` image tower with ImageNet weights and a Hugging Face text tower with
  the all-MiniLM-L6-v2 weights, both followed by a linear projection to a shared 512-d space
  (512 = ViT-B/16's width, so heads sized for the paper fit unchanged). The two projections are
  random (fixed seed): the towers were never trained together, so `lite` has NO zero-shot
  image-text alignment. Image-text similarities (e.g. zero-shot CLIP-IQA "Good photo." vs
  "Bad photo.") are meaningless with it; image features alone are a real ImageNet embedding
  (a random rotation of Lite0's pooled features), and text features a real sentence embedding.
- `tiny`: the same classes as `lite` with small random configs, for fast tests.

Every model comes back in eval mode with all parameters frozen (both papers keep CLIP frozen).

Precision: `fp16` (and `fp16_as_released`, the same encoders) is OpenAI CLIP's own mixed
precision, as the release's `clip.build_model` leaves it and as open_clip's `precision="fp16"`
reproduces it: Linear / conv / attention weights and the two projections in fp16, LayerNorms
computing in fp32 (`LayerNormFp32`), embeddings kept fp32 and cast at use (`cast_frozen_clip`
applies the same to a model built in fp32). `lite` / `tiny` are cast whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import open_clip
import torch
from open_clip.model import convert_weights_to_lp
from open_clip.transform import MaybeConvertMode, MaybeToTensor, image_transform
from open_clip.transformer import LayerNorm, LayerNormFp32
from torch import nn
from torchvision.transforms import (
    Compose,
    InterpolationMode,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
)

from agiqa_lib.core.config import FP16_AS_RELEASED, precision_dtype
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import write_json
from agiqa_lib.core.paths import cache_dir
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.core.tensor_io import save_tensors
from .weights import (
    CHECKPOINT_ERRORS,
    DOWNLOAD_ERRORS,
    LITE0_ARCH,
    RANDOM_SEED,
    channels_last,
    fingerprint_files,
    fingerprint_module,
    load_lite0_weights,
    minilm_path,
    missing_full_weights,
    quiet_root_log,
)


CONTEXT_LENGTH = 77  # tokens per prompt for every profile, as in OpenAI CLIP
TRAIN_CROP_SCALE = (0.08, 1.0)  # CLIP-AGIQA (CoOp/Dassl) random-resized-crop scale
LITE_EMBED_DIM = 512
LITE_SEED = 0  # seed of lite's two random projections (part of its model_id fingerprint)
TINY_SEED = 0
TINY_IMAGE_SIZE = 64
TINY_EMBED_DIM = 32
TINY_TEXT_CONFIG = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        pad_token_id=0)
# A tiny CLIP of the `full` family (open_clip VisionTransformer + TextTransformer, OpenAI BPE).
TINY_FULL_CONFIG = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8),
    text_cfg=dict(context_length=CONTEXT_LENGTH, vocab_size=49408, width=32, heads=2, layers=2),
)


@dataclass
class ClipBundle:
    """A frozen CLIP model with the preprocessing and tokenizer that belong to it."""

    model: nn.Module  # open_clip CLIP or CustomTextCLIP, eval mode, requires_grad False
    preprocess_train: Callable  # PIL -> tensor: random-resized-crop (0.08-1) + h-flip
    preprocess_val: Callable  # PIL -> tensor: resize shortest side + centre crop
    tokenizer: Callable  # list[str] -> LongTensor [N, context_length]
    embed_dim: int
    profile: str
    model_id: str  # stable id of the weights, for feature-cache keys
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    precision: str = "fp32"  # as built: fp32, fp16 (OpenAI-style mixed), bf16
    weights: str = "pretrained"  # "random": full architecture with seeded random weights

    @property
    def dtype(self) -> torch.dtype:
        """Dtype the encoders compute in (cast image batches to it before `encode_image`)."""
        return encoder_dtype(self.model)

    @property
    def device(self) -> torch.device:
        """Device holding the model weights."""
        return next(self.model.parameters()).device


def create_clip(profile: str = "lite", arch: str = "ViT-B-16", pretrained: str | None = "openai",
                checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                precision: str = "fp32") -> ClipBundle:
    """Build a frozen CLIP in the given weight profile (`full`, `lite` or `tiny`).

    `arch`, `pretrained` and `checkpoint` apply to `full` only: `checkpoint` (a state-dict file
    for `arch`, or an open_clip folder with `open_clip_config.json`) replaces the hub tag
    (CLI `--clip-checkpoint`, notebook `clip_checkpoint=`), and `pretrained=None` builds seeded
    random weights (`weights="random"`, benchmarks). `precision` is `fp32`, `fp16`, `bf16` or
    `fp16_as_released` (the fp16 encoders; what differs is CLIP-AGIQA's context vectors).
    """
    get_profile(profile)
    if precision == FP16_AS_RELEASED:
        precision = "fp16"  # the same frozen encoders (and cached features) as fp16
    dtype = precision_dtype(precision)
    if checkpoint is not None and profile != "full":
        raise AgiqaError(f"checkpoint= is read by profile 'full' only, not {profile!r}: "
                         "pass profile='full' to load an open_clip checkpoint.")
    if profile == "full":
        model, tokenizer, model_id = _create_full(arch, pretrained, checkpoint, device, precision)
    elif profile == "lite":
        model, tokenizer, model_id = _create_lite()
    else:
        model, tokenizer, model_id = _create_tiny()
    if profile != "full":
        model.to(device=device, dtype=dtype)
    if precision != "fp32":
        model_id = f"{model_id}:{precision}"
    model.eval().requires_grad_(False)
    random = profile == "full" and checkpoint is None and pretrained is None
    return _bundle(model, tokenizer, profile, model_id, precision,
                   "random" if random else "pretrained")


def encoder_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a frozen CLIP computes in: its transformer weights' for OpenAI-style models
    (whose embeddings and LayerNorms stay fp32 in fp16), else that of its first parameter."""
    for tower in (getattr(model, "visual", None), model):
        transformer = getattr(tower, "transformer", None)
        if hasattr(transformer, "get_cast_dtype"):
            return transformer.get_cast_dtype()
    return next(model.parameters()).dtype


def cast_frozen_clip(model: nn.Module, precision: str) -> None:
    """Cast a frozen CLIP to `precision` in place, as open_clip builds it in that precision.

    OpenAI-style `CLIP` models get OpenAI's mixed precision (`convert_weights_to_lp`: Linear,
    conv, attention and projection weights low-precision; LayerNorms switched to
    `LayerNormFp32`, which computes in fp32 as OpenAI's CLIP LayerNorm does; embeddings fp32);
    any other model (`lite`/`tiny` CustomTextCLIP) is cast whole.
    """
    dtype = precision_dtype(precision)
    if not isinstance(model, open_clip.CLIP):
        model.to(dtype)
        return
    model.float()
    if dtype == torch.float32:
        return
    for module in model.modules():
        if type(module) is LayerNorm:  # same parameters, computes in fp32 and casts back
            module.__class__ = LayerNormFp32
    convert_weights_to_lp(model, dtype=dtype)


def save_tiny_full_clip(path: str | os.PathLike) -> Path:
    """Save a random tiny CLIP of the `full` family as an open_clip folder; return the folder.

    The folder holds `open_clip_config.json` and `open_clip_model.safetensors`, the layout that
    `create_clip("full", checkpoint=folder)` reads, so tests exercise `full`'s loader offline.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = open_clip.CLIP(**TINY_FULL_CONFIG)
    preprocess = dict(size=TINY_FULL_CONFIG["vision_cfg"]["image_size"],
                      mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD,
                      interpolation="bicubic", resize_mode="shortest")
    write_json(path / "open_clip_config.json",
               {"model_cfg": TINY_FULL_CONFIG, "preprocess_cfg": preprocess})
    save_tensors(path / "open_clip_model.safetensors", model.state_dict())
    return path


def _create_full(arch: str, pretrained: str | None, checkpoint: str | os.PathLike | None,
                 device: str | torch.device, precision: str) -> tuple[nn.Module, Callable, str]:
    """open_clip model from a hub tag or a local checkpoint, with one clear error when absent."""
    if checkpoint is not None:
        return _create_full_from_checkpoint(Path(checkpoint), arch, pretrained, device, precision)
    _check_arch(arch)
    if pretrained is None:
        return _create_full_random(arch, device, precision)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise AgiqaError(f"open_clip has no pretrained tag {pretrained!r} for {arch!r}: choose one "
                         f"of {', '.join(tags) or '(none)'} or pass checkpoint=PATH.")
    quick_gelu = open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False)
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(arch, pretrained=pretrained, precision=precision,
                                           device=device, force_quick_gelu=quick_gelu,
                                           require_pretrained=True)
    except DOWNLOAD_ERRORS as err:
        raise missing_full_weights(
            f"the open_clip weights {arch!r} / {pretrained!r}",
            f"fetch them once with `python -c \"import open_clip; "
            f"open_clip.create_model('{arch}', pretrained='{pretrained}')\"`",
            "pass checkpoint=PATH (a local copy of those weights: an open_clip .pt/.bin/"
            ".safetensors state dict, or a folder with open_clip_config.json)",
            role="clip") from err
    return model, open_clip.get_tokenizer(arch), f"open_clip:{arch}:{pretrained}"


def _create_full_random(arch: str, device: str | torch.device,
                        precision: str) -> tuple[nn.Module, Callable, str]:
    """`arch` with seeded random weights (`weights="random"`): the `openai` tag's QuickGELU and
    preprocessing when the architecture has that tag, so the model is CLIP-AGIQA's in all but
    its weights. Rebuilding gives the same weights, so a checkpoint trained on them scores
    with the same frozen CLIP; the id names the seed and fingerprints the weights."""
    tag = open_clip.get_pretrained_cfg(arch, "openai") or {}
    kwargs = dict(force_quick_gelu=tag.get("quick_gelu", False),
                  force_preprocess_cfg={k: tag[k] for k in ("mean", "std", "interpolation",
                                                            "resize_mode") if k in tag})
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(RANDOM_SEED)
        model = open_clip.create_model(arch, pretrained=None, precision=precision, device=device,
                                       **kwargs)
    label = f"{arch}-quickgelu" if kwargs["force_quick_gelu"] else arch
    model_id = f"open_clip:{label}:random-seed{RANDOM_SEED}-{fingerprint_module(model)}"
    return model, open_clip.get_tokenizer(arch), model_id


def _quiet_open_clip():
    """Keep open_clip's own root-logger lines about missing or skipped weights off the
    console (`ERROR:root:Failed to download weights ...`): the AgiqaError raised here says the
    same with what to do, and random weights are asked for on purpose."""
    return quiet_root_log("open_clip", "Failed to download weights", "Pretrained tag or path",
                          "No pretrained weights loaded")


def _create_full_from_checkpoint(path: Path, arch: str, pretrained: str | None,
                                 device: str | torch.device,
                                 precision: str) -> tuple[nn.Module, Callable, str]:
    """open_clip model from a local state-dict file or an open_clip folder.

    A file is read as a local copy of `arch`/`pretrained` weights: when `pretrained` is a known
    tag of `arch`, that tag's settings apply (QuickGELU and normalisation for `openai`).
    """
    kwargs = dict(precision=precision, device=device, require_pretrained=True)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise AgiqaError(f"checkpoint folder {path} has no open_clip_config.json: pass the "
                             "weights file itself together with arch=NAME.")
        name, label, files = f"local-dir:{path}", "local-dir", sorted(path.iterdir())
    elif path.is_file():
        _check_arch(arch)
        tag = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
        kwargs.update(pretrained=str(path), force_quick_gelu=tag.get("quick_gelu", False),
                      force_preprocess_cfg={k: tag[k] for k in
                                            ("mean", "std", "interpolation", "resize_mode")
                                            if k in tag})
        name, files = arch, [path]
        label = f"{arch}-quickgelu" if kwargs["force_quick_gelu"] else arch
    else:
        raise AgiqaError(f"checkpoint {path} does not exist: pass an open_clip .pt/.safetensors "
                         "file or a folder with open_clip_config.json.")
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(name, **kwargs)
    except CHECKPOINT_ERRORS as err:
        raise AgiqaError(f"could not load checkpoint {path} as open_clip {label!r} ({err}): pass "
                         "the arch it was trained with (arch=NAME, pretrained=TAG) or a folder "
                         "with its open_clip_config.json.") from err
    model_id = f"open_clip:{label}:sha256-{fingerprint_files(f for f in files if f.is_file())}"
    return model, open_clip.get_tokenizer(name), model_id


def _check_arch(arch: str) -> None:
    """Refuse an architecture name open_clip does not know."""
    if arch not in open_clip.list_models():
        raise AgiqaError(f"open_clip has no architecture {arch!r}: see open_clip.list_models() "
                         "(CLIP-AGIQA uses 'ViT-B-16').")


def _create_lite() -> tuple[nn.Module, Callable, str]:
    """EfficientNet-Lite0 + MiniLM-L6 CustomTextCLIP with packaged weights, random projections."""
    text_dir = str(minilm_path())
    with torch.random.fork_rng(devices=[]), _quiet_transformers():
        torch.manual_seed(LITE_SEED)
        model = open_clip.CustomTextCLIP(
            embed_dim=LITE_EMBED_DIM,
            vision_cfg=open_clip.CLIPVisionCfg(timm_model_name=LITE0_ARCH,
                                               timm_model_pretrained=False, timm_pool="avg",
                                               timm_proj="linear", image_size=224),
            text_cfg=open_clip.CLIPTextCfg(hf_model_name=text_dir, hf_tokenizer_name=text_dir,
                                           hf_model_pretrained=True, hf_pooler_type="mean_pooler",
                                           hf_proj_type="linear", context_length=CONTEXT_LENGTH),
        )
    load_lite0_weights(model.visual.trunk)
    channels_last(model.visual.trunk)
    _set_preprocess(model, size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tokenizer = open_clip.tokenizer.HFTokenizer(text_dir, context_length=CONTEXT_LENGTH)
    return model, tokenizer, f"lite:effnet-lite0+minilm-l6:{fingerprint_module(model)}"


def _create_tiny() -> tuple[nn.Module, Callable, str]:
    """Random tiny CustomTextCLIP: timm `test_efficientnet` + a 2-layer BERT with MiniLM's vocab."""
    text_dir = str(_tiny_text_dir())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = open_clip.CustomTextCLIP(
            embed_dim=TINY_EMBED_DIM,
            vision_cfg=open_clip.CLIPVisionCfg(timm_model_name="test_efficientnet",
                                               timm_model_pretrained=False, timm_pool="avg",
                                               timm_proj="linear", image_size=TINY_IMAGE_SIZE),
            text_cfg=open_clip.CLIPTextCfg(hf_model_name=text_dir, hf_tokenizer_name=text_dir,
                                           hf_model_pretrained=False, hf_pooler_type="mean_pooler",
                                           hf_proj_type="linear", context_length=CONTEXT_LENGTH),
        )
    _set_preprocess(model, size=TINY_IMAGE_SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tokenizer = open_clip.tokenizer.HFTokenizer(text_dir, context_length=CONTEXT_LENGTH)
    return model, tokenizer, f"tiny:seed{TINY_SEED}:{fingerprint_module(model)}"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (MiniLM's unused pooler is expected)."""
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()


def _tiny_text_dir() -> Path:
    """A folder with the tiny BERT config and MiniLM's tokenizer (written once, atomically)."""
    from transformers import AutoTokenizer, BertConfig

    target = cache_dir() / "models" / "tiny-bert-v1"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-bert-", dir=target.parent))
    try:
        config = {k: v for k, v in TINY_TEXT_CONFIG.items() if k != "model_type"}
        BertConfig(**config).save_pretrained(staging)
        AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process wrote it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _set_preprocess(model: nn.Module, size: int, mean: tuple, std: tuple) -> None:
    """Attach open_clip's preprocess config to a model built without `create_model`."""
    open_clip.model.set_model_preprocess_cfg(model, dict(
        size=size, mode="RGB", mean=mean, std=std, interpolation="bicubic",
        resize_mode="shortest", fill_color=0))


def _bundle(model: nn.Module, tokenizer: Callable, profile: str, model_id: str,
            precision: str = "fp32", weights: str = "pretrained") -> ClipBundle:
    """Wrap a model with train/val transforms built from its own preprocess config."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    mean, std, interpolation = tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"]
    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    train = Compose([RandomResizedCrop(size, scale=TRAIN_CROP_SCALE, interpolation=mode),
                     RandomHorizontalFlip(), MaybeConvertMode(), MaybeToTensor(),
                     Normalize(mean, std)])
    val = image_transform(size, is_train=False, mean=mean, std=std,
                          resize_mode=cfg.get("resize_mode", "shortest"),
                          interpolation=interpolation)
    return ClipBundle(model=model, preprocess_train=train, preprocess_val=val, tokenizer=tokenizer,
                      embed_dim=_embed_dim(model), profile=profile, model_id=model_id,
                      image_size=int(size), mean=mean, std=std, interpolation=interpolation,
                      precision=precision, weights=weights)


def _embed_dim(model: nn.Module) -> int:
    """Width of the shared image-text space (the text projection's output size)."""
    if isinstance(model, open_clip.CustomTextCLIP):
        return int(model.text.output_dim)
    projection = model.text_projection
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    return int(projection.shape[1])
