"""A very small CLIP-like model and text tower for unit tests of CLIP-AGIQA's own parts.

It follows the `agiqa_lib.backbones.text_tower.TextTower` interface (tokenize, token_embedding,
width, encode_with_embeddings) with a word-level tokenizer, so the prompt learner, head and
training loop can be tested in milliseconds and independently of the real CLIP profiles
(which are tested through `create_clip("tiny")` elsewhere in these tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WORDS = ["<pad>", "<sos>", "<eot>", "x", ".", "terrible", "bad", "poor", "average", "good",
         "perfect", "photo"]
CONTEXT_LENGTH = 24


class StandInClip(nn.Module):
    """Image encoder: linear map of a 4x4 average-pooled image; text: one attention layer."""

    def __init__(self, width: int = 16, embed_dim: int = 8) -> None:
        super().__init__()
        self.visual = nn.Linear(3 * 4 * 4, embed_dim)
        self.token_embedding = nn.Embedding(len(WORDS), width)
        self.positional_embedding = nn.Parameter(torch.randn(CONTEXT_LENGTH, width) * 0.1)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.text_projection = nn.Linear(width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.embed_dim = embed_dim

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(F.adaptive_avg_pool2d(images, 4).flatten(1))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return StandInTower(self).encode_with_embeddings(self.token_embedding(ids), ids)


def tokenize(texts: list[str]) -> torch.Tensor:
    """Lower-case words and "." -> ids, with start/end tokens, padded to CONTEXT_LENGTH."""
    out = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
    for row, text in enumerate(texts):
        words = text.lower().replace(".", " .").split()
        ids = [1] + [WORDS.index(w) for w in words] + [2]
        out[row, :len(ids)] = torch.tensor(ids)
    return out


class StandInTower:
    """The TextTower interface over `StandInClip`; pools the end-of-text position."""

    def __init__(self, clip_model: StandInClip) -> None:
        self.clip = clip_model
        self.width = clip_model.token_embedding.embedding_dim

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return tokenize(texts)

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.clip.token_embedding(ids)

    def placeholder_prompts(self, class_names: list[str], n_ctx: int) -> torch.Tensor:
        ids = self.tokenize([" ".join(["X"] * n_ctx + [f"{name}."]) for name in class_names])
        assert bool((ids[:, 1:1 + n_ctx] == WORDS.index("x")).all())
        return ids

    def trimmed(self, ids: torch.Tensor) -> torch.Tensor:
        return ids  # the stand-in has no padding to cut

    def encode_with_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = embeds + self.clip.positional_embedding[: embeds.shape[1]].to(embeds.dtype)
        x = x + self.clip.attn(x, x, x, key_padding_mask=ids == 0, need_weights=False)[0]
        eot = (ids == 2).int().argmax(dim=-1)
        return self.clip.text_projection(x[torch.arange(x.shape[0]), eot])


def standin_model(use_text: bool = True, **config_kwargs):
    """A ClipAgiqa on the stand-in CLIP (seeded)."""
    from agiqa_lib.clip_agiqa.model import ClipAgiqa, ClipAgiqaConfig

    torch.manual_seed(0)
    clip = StandInClip()
    config = ClipAgiqaConfig(use_text=use_text, hidden_dim=16, **config_kwargs)
    return ClipAgiqa(clip, StandInTower(clip), clip.embed_dim, config)
