"""MANIQA's image backbone in three weight profiles: a 28 x 28 grid of feature tokens per image.

- `full`: timm `vit_base_patch8_224.augreg_in21k_ft_in1k`, as in MANIQA / MA-AGIQA: the outputs
  of blocks 6, 7, 8, 9 (0-based, after the residual, before the final norm), CLS dropped,
  concatenated on channels: [B, 4 x 768 = 3072, 784]. Blocks 10-11, the final norm and the head
  never reach the output and are removed (71,630,592 parameters remain).
- `lite`: EfficientNet-Lite0 (packaged ImageNet weights): its five feature maps (16, 24, 40,
  112, 320 channels at strides 2-32) brought to the 28 x 28 grid (stride 8) and concatenated:
  [B, 512, 784]. Larger maps are average-pooled down (area averaging, no aliasing), smaller ones
  upsampled bilinearly (align_corners=False).
- `tiny`: a random 4-block ViT with 8 x 8 patches and width 16 (same class as `full`, all four
  blocks tapped): [B, 64, 784], for tests of `full`'s code path.

Each backbone brings MANIQA's released preprocessing in two resize variants
(`transform(resize=...)`), both 224 x 224 with no crop, [0, 1] scaling and mean = std = 0.5
(also Lite0's own normalisation). `transform(size=...)` resizes to another square side; only the
convolutional `lite` backbone accepts one (`check_image_size`), and its five maps still come
out on the 28 x 28 grid (a 512 px input gives maps of 256 ... 16 px, averaged or upsampled):

- ``released_cv2`` (the `full` default): MA-AGIQA's `data/AIGC_general.py:35-41` (commit
  d5d025e) exactly: `cv2.imread(path, cv2.IMREAD_COLOR)` (BGR uint8; EXIF orientation applied,
  alpha dropped, grey expanded), `cv2.resize(..., (224, 224), interpolation=cv2.INTER_CUBIC)`
  on the uint8 image (no antialiasing, rounded back to uint8), BGR -> RGB, `/ 255` in float32,
  HWC -> CHW; then `utils/process.py:255-264` `Normalize(0.5, 0.5)`: (x - 0.5) / 0.5
  (`main.py:234-252`). `ReleasedCv2Transform` reads the file itself when given a path, as
  the release does; given a PIL image (scoring) it resizes its RGB pixels the same way.
- ``pil`` (the `lite`/`tiny` default, and the release's earlier `AIGC_general.py`): PIL
  bicubic resize, which antialiases when shrinking; on AGIQA-3K's 512 x 512 images it differs
  from the cv2 resize by about 1 % of the pixel range on average.

`weights="random"` (`pretrained=False` for `full`) builds ViT-B/8 with seeded random weights;
its model id names the seed and fingerprints the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import to_rgb
from agiqa_lib.core.profiles import get_profile
from .weights import (
    CHECKPOINT_ERRORS,
    DOWNLOAD_ERRORS,
    RANDOM_SEED,
    create_lite0,
    fingerprint_files,
    fingerprint_module,
    missing_full_weights,
)

INPUT_SIZE = 224
GRID = 28  # tokens per side: 224 / 8
FULL_VIT = "vit_base_patch8_224.augreg_in21k_ft_in1k"
FULL_TAPS = (6, 7, 8, 9)
TINY_SEED = 0
TINY_VIT = dict(img_size=INPUT_SIZE, patch_size=8, embed_dim=16, depth=4, num_heads=2,
                mlp_ratio=2.0, num_classes=0)
TINY_TAPS = (0, 1, 2, 3)
FULL_CHANNELS = 768 * len(FULL_TAPS)  # ViT-B/8 width x tapped blocks
RESIZES = ("released_cv2", "pil")


class ReleasedCv2Transform:
    """MA-AGIQA's released image loading and preprocessing (see the module docstring).

    Called with a file path it reads the file with OpenCV as the release does; called with a
    PIL image it applies the same resize to the image's RGB pixels (cv2's cubic kernel acts on
    each channel alone, so the channel order does not matter). Returns float32 [3, 224, 224].
    """

    reads_paths = True  # MAItems passes file paths, not decoded images

    def __init__(self, size: int = INPUT_SIZE, mean: float = 0.5, std: float = 0.5) -> None:
        self.size, self.mean, self.std = size, mean, std

    def __call__(self, image) -> torch.Tensor:
        import cv2

        if isinstance(image, (str, os.PathLike)):
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AgiqaError(f"cannot read image {image} (OpenCV could not decode it); "
                                 "replace or remove the file.")
            rgb = cv2.cvtColor(cv2.resize(bgr, (self.size, self.size),
                                          interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2RGB)
        else:
            pixels = np.asarray(to_rgb(image), dtype=np.uint8)
            rgb = cv2.resize(pixels, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        x = np.transpose(rgb.astype(np.float32) / 255, (2, 0, 1))
        return torch.from_numpy((x - self.mean) / self.std)

    def __repr__(self) -> str:
        return (f"ReleasedCv2Transform(cv2.imread IMREAD_COLOR, resize {self.size}x{self.size} "
                f"INTER_CUBIC uint8, BGR2RGB, /255, mean={self.mean}, std={self.std})")


class IqaBackbone(nn.Module):
    """Image -> [B, out_channels, 784] tokens on a 28 x 28 grid, with its own preprocessing."""

    input_size = INPUT_SIZE
    interpolation = "bicubic"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    out_channels: int
    model_id: str  # architecture + weights at build time, for caching a FROZEN backbone

    def transform(self, train: bool = False, resize: str = "pil",
                  size: int = INPUT_SIZE) -> Callable:
        """PIL image -> normalised [3, size, size] tensor (bicubic resize, no crop).

        `resize="released_cv2"` gives `ReleasedCv2Transform` (also takes file paths).
        `train=True` adds a random horizontal flip (PIL only). MA-AGIQA's as-released
        rotation/flip augmentation belongs to its training code, which should start from
        `transform(False)`.
        """
        return image_transform(train, resize, size)


def image_transform(train: bool = False, resize: str = "pil",
                    size: int = INPUT_SIZE) -> Callable:
    """The preprocessing every IQA backbone shares (`IqaBackbone.transform`), without building
    one: size x size (224 as released), [0, 1], mean = std = 0.5, resized as `resize` says."""
    if resize not in RESIZES:
        raise AgiqaError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}.")
    mean, std = IqaBackbone.mean, IqaBackbone.std
    if resize == "released_cv2":
        if train:
            raise AgiqaError("the released cv2 preprocessing has no random flip; apply "
                             "MA-AGIQA's augmentation (ma_agiqa.data.augment) instead.")
        return ReleasedCv2Transform(size, mean[0], std[0])
    steps = [T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
             T.Lambda(_to_rgb)]
    if train:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


SIZE_STEP = 32  # Lite0's largest stride: sides that are multiples of it keep maps aligned
LARGEST_SIZE = 1024


def check_image_size(profile: str, size: int) -> int:
    """`size` if the profile's backbone can read it, else an AgiqaError: the ViTs of `full` and
    `tiny` read 224 only (fixed position embeddings); `lite` reads multiples of 32 from 224 to
    1024."""
    if profile != "lite":
        if size != INPUT_SIZE:
            raise AgiqaError(f"profile {profile!r} reads {INPUT_SIZE} x {INPUT_SIZE} images only "
                             f"(its ViT has fixed position embeddings), not {size}.")
        return size
    if size % SIZE_STEP or not INPUT_SIZE <= size <= LARGEST_SIZE:
        raise AgiqaError(f"image_size must be a multiple of {SIZE_STEP} from {INPUT_SIZE} to "
                         f"{LARGEST_SIZE} for profile 'lite', got {size}.")
    return size


def dataset_image_size(paths: Sequence[str], largest: int, sample: int = 32) -> int:
    """The square side to read a dataset at: the median shorter side of up to `sample` evenly
    spaced images, rounded down to a multiple of 32, kept within [224, `largest`].

    Reads image headers only. `largest=224` (the released size) returns 224 without reading.
    """
    if largest <= INPUT_SIZE or not len(paths):
        return INPUT_SIZE
    picks = np.linspace(0, len(paths) - 1, min(sample, len(paths))).astype(int)
    sides = []
    for i in picks:
        try:
            with Image.open(paths[i]) as image:
                sides.append(min(image.size))
        except OSError as err:
            raise AgiqaError(f"cannot read image {paths[i]} ({err}); replace or remove the "
                             "file.") from err
    side = int(np.median(sides)) // SIZE_STEP * SIZE_STEP
    return int(min(max(side, INPUT_SIZE), largest))


class VitBlockTokens(IqaBackbone):
    """Patch tokens of chosen ViT blocks (after the residual, no final norm), CLS dropped."""

    def __init__(self, vit: nn.Module, taps: Sequence[int], model_id: str) -> None:
        super().__init__()
        self.taps = list(vit.prune_intermediate_layers(list(taps), prune_norm=True,
                                                       prune_head=True))
        self.vit = vit
        self.out_channels = vit.embed_dim * len(self.taps)
        self.model_id = model_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_intermediates(x, indices=self.taps, norm=False, output_fmt="NLC",
                                                intermediates_only=True)  # len(taps) x [B, 784, W]
        return torch.cat(tokens, dim=-1).transpose(1, 2)  # [B, W * len(taps), 784]


class Lite0GridTokens(IqaBackbone):
    """EfficientNet-Lite0's five feature maps resampled to 28 x 28 and concatenated."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.trunk = create_lite0(pretrained=pretrained, features_only=True)
        self.out_channels = sum(self.trunk.feature_info.channels())
        self.model_id = f"lite:effnet-lite0-grid{GRID}:{fingerprint_module(self)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grids = [_to_grid(feature) for feature in self.trunk(x)]  # 5 x [B, C_i, 28, 28]
        return torch.cat(grids, dim=1).flatten(2)  # [B, 512, 784]


def create_iqa_backbone(profile: str = "lite", pretrained: bool = True,
                        device: str | torch.device = "cpu",
                        checkpoint: str | os.PathLike | None = None) -> IqaBackbone:
    """Build the IQA backbone of a weight profile (trainable, eval mode).

    `pretrained=False` builds the architecture with random weights and never downloads.
    `checkpoint` (`full` only) is a local copy of the ViT-B/8 weights: timm's `.safetensors`
    / `.pth` state dict or the original augreg `.npz`.
    """
    get_profile(profile)
    if checkpoint is not None and profile != "full":
        raise AgiqaError(f"checkpoint= is read by profile 'full' only, not {profile!r}.")
    if profile == "full":
        backbone = _create_full(pretrained, checkpoint)
    elif profile == "lite":
        backbone = Lite0GridTokens(pretrained=pretrained)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            vit = timm.models.VisionTransformer(**TINY_VIT)
        backbone = VitBlockTokens(vit, TINY_TAPS, model_id="")
        backbone.model_id = f"tiny:vit-tokens:seed{TINY_SEED}:{fingerprint_module(backbone)}"
    return backbone.to(device).eval()


def _create_full(pretrained: bool, checkpoint: str | os.PathLike | None) -> VitBlockTokens:
    """ViT-B/8 from timm (hub weights, a local file, or random) cut after block 9."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise AgiqaError(f"checkpoint {path} does not exist: pass the {FULL_VIT} weights "
                             "(model.safetensors from the timm hub repo, or the augreg .npz).")
        vit = timm.create_model(FULL_VIT, pretrained=False, weight_init="skip")  # all overwritten
        _load_vit_file(vit, path)
        model_id = f"timm:{FULL_VIT}:sha256-{fingerprint_files([path])}"
    elif pretrained:
        try:
            vit = timm.create_model(FULL_VIT, pretrained=True, weight_init="skip")
        except DOWNLOAD_ERRORS as err:
            raise missing_full_weights(
                f"the timm weights {FULL_VIT!r}",
                f"fetch them once with `python -c \"import timm; timm.create_model("
                f"'{FULL_VIT}', pretrained=True)\"`",
                "pass checkpoint=PATH (its model.safetensors or the original augreg .npz)",
                role="vit") from err
        model_id = f"timm:{FULL_VIT}"
    else:  # weights="random": seeded, so a rebuild (and a resumed run) starts from the same
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            vit = timm.create_model(FULL_VIT, pretrained=False)
        model_id = f"random:{FULL_VIT}:seed{RANDOM_SEED}-{fingerprint_module(vit)}"
    return VitBlockTokens(vit, FULL_TAPS, f"{model_id}:blocks{'-'.join(map(str, FULL_TAPS))}")


def _load_vit_file(vit: nn.Module, path: Path) -> None:
    """Load a local ViT checkpoint strictly, or say that the file holds something else."""
    try:
        if path.suffix == ".npz":
            vit.load_pretrained(str(path))
        else:
            timm.models.load_checkpoint(vit, str(path), strict=True, weights_only=True)
    except CHECKPOINT_ERRORS as err:
        raise AgiqaError(f"checkpoint {path} does not hold {FULL_VIT} weights ({err}).") from err


def _to_grid(feature: torch.Tensor) -> torch.Tensor:
    """Resample a feature map to GRID x GRID: area-average down, bilinear up."""
    if feature.shape[-1] >= GRID:
        return F.adaptive_avg_pool2d(feature, GRID)
    return F.interpolate(feature, size=(GRID, GRID), mode="bilinear", align_corners=False)


def _to_rgb(image):
    """Convert a PIL image to RGB (grayscale / RGBA inputs)."""
    return image.convert("RGB")
