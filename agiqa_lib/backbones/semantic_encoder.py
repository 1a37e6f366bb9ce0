"""What every MA-AGIQA semantic encoder shares: the interface, the padding and the pooling.

An encoder asks one question about each image and returns the mean of its last layer's
hidden states over all positions (`masked_mean`), one vector per image. The profiles'
encoders live in `backbones.mllm` (full / tiny) and `backbones.lite_semantic` (lite).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from agiqa_lib.core.errors import AgiqaError

IMAGE_PLACEMENTS = ("after_text", "before_text")


class SemanticEncoder(nn.Module):
    """Common interface: ``encode(images, question) -> [B, dim]`` plus identity attributes."""

    profile: str
    model_id: str
    dim: int
    is_stand_in: bool
    image_placement: str

    def encode(self, images: list[Image.Image], question: str | list[str]) -> torch.Tensor:
        """Pooled last-layer hidden states, one row per image (float32, CPU)."""
        raise NotImplementedError

    def encode_questions(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        """[B, Q, dim]: every image asked every question (subclasses may share work)."""
        return torch.stack([self.encode(images, question) for question in questions], dim=1)

    def describe(self, question: str = "{question}") -> str:
        """A few lines for notebooks and logs: model, profile, width and the input layout."""
        raise NotImplementedError


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` [B, L, D] over the positions where `mask` [B, L] is 1 (any padding side)."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def expand2square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad an RGB image to a centred square with `background` (as mPLUG-Owl2/LLaVA release)."""
    image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def mean_colour(mean: tuple[float, ...] | list[float]) -> tuple[int, int, int]:
    """The processor's normalisation mean as an 8-bit RGB colour (int(x * 255), as released)."""
    return tuple(int(x * 255) for x in mean)  # type: ignore[return-value]


def token_layout_dict(prompt: str, before: list[str], after: list[str],
                      n_image_tokens: int) -> dict:
    """The `token_layout` of every encoder: prompt, token counts, image span, text tokens."""
    n_text = len(before) + len(after)
    return {"prompt": prompt, "n_text_tokens": n_text, "n_image_tokens": n_image_tokens,
            "n_positions": n_text + n_image_tokens,
            "image_span": (len(before), len(before) + n_image_tokens),
            "text_before": before, "text_after": after}


def check_placement(image_placement: str) -> None:
    """An AgiqaError unless `image_placement` is one of IMAGE_PLACEMENTS."""
    if image_placement not in IMAGE_PLACEMENTS:
        raise AgiqaError(f"unknown image_placement {image_placement!r}; choose "
                         f"{' or '.join(IMAGE_PLACEMENTS)}")
