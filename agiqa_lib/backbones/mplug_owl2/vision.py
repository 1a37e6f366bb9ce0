"""mPLUG-Owl2's vision side: a ViT-L/14 at 448 px and the visual abstractor (65 tokens out).

Attribute names are the released ones (mPLUG-Owl2 ``model/visual_encoder.py``), so the
modules' state-dict keys are the hub checkpoint's keys unchanged
(``model.vision_model.embeddings.cls_token``, ``...self_attn.query_key_value.weight``,
``model.visual_abstractor.encoder.layers.0.crossattention.attention.query.weight`` ...).
The computation follows the release line by line, including its quirks (cited inline):
the fused QKV projection is laid out per head as (q, k, v), the abstractor's keys/values are
the normed queries concatenated with the normed image tokens, and its residual is taken
after ``norm1``. Attention uses `torch.nn.functional.scaled_dot_product_attention` (the same
softmax(QK^T / sqrt(d)) V as the release's explicit matmuls, no mask, no dropout).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from agiqa_lib.backbones.mplug_owl2.config import AbstractorSettings, VisionSettings

# --------------------------------------------------------------------------- sin-cos tables


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[M, dim] sin | cos table of `positions` (MAE recipe, float32; visual_encoder.py:63-81)."""
    omega = np.arange(dim // 2, dtype=np.float32) / np.float32(dim / 2.0)
    omega = 1.0 / 10000 ** omega  # [dim/2]
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float32), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int, cls_token: bool) -> np.ndarray:
    """[(1 +) grid^2, dim] 2-D table (visual_encoder.py:34-60): first half from the x (column)
    coordinate, second half from y, row-major over the grid, a zero row first (class token)."""
    xs, ys = np.meshgrid(np.arange(grid_size, dtype=np.float32),
                         np.arange(grid_size, dtype=np.float32))  # 'xy' indexing, [g, g] each
    table = np.concatenate([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros([1, dim], dtype=table.dtype), table], axis=0)
    return table


# --------------------------------------------------------------------------- ViT


class VisionEmbeddings(nn.Module):
    """Class token + 14x14 patches (no bias) + learned positions, a LayerNorm (lines 85-125)."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, s.hidden_size))
        self.patch_embed = nn.Conv2d(s.num_channels, s.hidden_size, kernel_size=s.patch_size,
                                     stride=s.patch_size, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, s.num_positions, s.hidden_size))
        self.pre_layernorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, 448, 448] -> [B, 1025, 1024]."""
        patches = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)  # [B, 1024, 1024]
        cls = self.cls_token.expand(patches.shape[0], 1, -1).to(patches.dtype)
        tokens = torch.cat([cls, patches], dim=1)  # [B, 1025, 1024]
        tokens = tokens + self.position_embedding[:, : tokens.shape[1]].to(tokens.dtype)
        return self.pre_layernorm(tokens)


class VisionAttention(nn.Module):
    """Self-attention with one fused projection ``query_key_value`` and output ``dense``."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.num_heads = s.num_attention_heads
        self.query_key_value = nn.Linear(s.hidden_size, 3 * s.hidden_size)
        self.dense = nn.Linear(s.hidden_size, s.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]."""
        batch, length, width = x.shape
        # visual_encoder.py:162-171: the 3*D outputs are grouped per head as (q, k, v) blocks
        qkv = self.query_key_value(x).reshape(batch, length, self.num_heads, 3, -1)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each [B, heads, L, D/heads]
        out = F.scaled_dot_product_attention(q, k, v)  # scale (D/heads)^-0.5 as line 143
        return self.dense(out.transpose(1, 2).reshape(batch, length, width))


class VisionMLP(nn.Module):
    """fc1 -> quick_gelu -> fc2 (lines 237-250)."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.activation_fn = ACT2FN[s.hidden_act]
        self.fc1 = nn.Linear(s.hidden_size, s.intermediate_size)
        self.fc2 = nn.Linear(s.intermediate_size, s.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-norm transformer block (lines 253-298)."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.self_attn = VisionAttention(s)
        self.input_layernorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.mlp = VisionMLP(s)
        self.post_attention_layernorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class VisionEncoder(nn.Module):
    """The stack of `VisionLayer`s (attribute ``layers``)."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VisionLayer(s) for _ in range(s.num_hidden_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionModel(nn.Module):
    """``model.vision_model``: embeddings -> 24 layers -> post LayerNorm (lines 393-456)."""

    def __init__(self, s: VisionSettings) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(s)
        self.encoder = VisionEncoder(s)
        self.post_layernorm = (nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
                               if s.use_post_layernorm else None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, 448, 448] -> last hidden state [B, 1025, 1024] (all tokens, class token first)."""
        x = self.encoder(self.embeddings(pixel_values))
        return self.post_layernorm(x) if self.post_layernorm is not None else x


# --------------------------------------------------------------------------- abstractor


class AbstractorAttention(nn.Module):
    """Cross-attention of the learned queries to [queries; image tokens] (lines 481-596).

    ``q_pos_embed`` [64, D] and ``k_pos_embed`` [1025, D] are fixed sin-cos tables registered as
    persistent buffers in the release (lines 509-517), hence part of the checkpoint's keys.
    """

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.num_heads = s.num_attention_heads
        width = s.hidden_size
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(s.encoder_hidden_size, width)
        self.value = nn.Linear(s.encoder_hidden_size, width)
        q_pos, k_pos = self.position_tables(s)
        self.register_buffer("q_pos_embed", q_pos)
        self.register_buffer("k_pos_embed", k_pos)

    @staticmethod
    def position_tables(s: AbstractorSettings) -> tuple[torch.Tensor, torch.Tensor]:
        """The two fixed tables: queries [Q, D] (1-D) and [cls + grid^2, D] (2-D)."""
        queries = np.arange(s.num_learnable_queries, dtype=np.float32)
        q_pos = torch.from_numpy(sincos_1d(s.hidden_size, queries)).float()
        k_pos = torch.from_numpy(sincos_2d(s.hidden_size, s.grid_size, s.use_cls_token)).float()
        return q_pos, k_pos

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, heads, L, d]

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        """queries [B, 64, D], keys_values [B, 64 + 1025, D] -> context [B, 64, D]."""
        dtype = queries.dtype
        q_pos = self.q_pos_embed.unsqueeze(0).to(dtype)  # [1, 64, D]
        kv_pos = torch.cat([self.q_pos_embed, self.k_pos_embed]).unsqueeze(0).to(dtype)
        q = self._heads(self.query(queries + q_pos))
        k = self._heads(self.key(keys_values + kv_pos))  # positions on keys only (line 553)
        v = self._heads(self.value(keys_values))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, 64, d]
        return out.transpose(1, 2).flatten(2)


class AbstractorMLP(nn.Module):
    """SwiGLU with a LayerNorm inside: w2(ffn_ln(silu(w1 x) * w3 x)) (lines 462-478)."""

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.act = nn.SiLU()
        self.w1 = nn.Linear(s.hidden_size, s.intermediate_size)
        self.w2 = nn.Linear(s.intermediate_size, s.hidden_size)
        self.w3 = nn.Linear(s.hidden_size, s.intermediate_size)
        self.ffn_ln = nn.LayerNorm(s.intermediate_size, eps=s.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(self.act(self.w1(x)) * self.w3(x)))


class AbstractorOutput(nn.Module):
    """``out_proj`` + residual, then ``norm2`` -> MLP + residual (lines 599-610)."""

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.out_proj = nn.Linear(s.encoder_hidden_size, s.encoder_hidden_size)
        self.norm2 = nn.LayerNorm(s.encoder_hidden_size)  # default eps 1e-5, as released
        self.mlp = AbstractorMLP(s)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = residual + self.out_proj(context)
        return x + self.mlp(self.norm2(x))


class AbstractorCrossAttention(nn.Module):
    """``crossattention``: norm1 (queries), normk (image), attention, output (lines 613-677)."""

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.attention = AbstractorAttention(s)
        self.output = AbstractorOutput(s)
        self.norm1 = nn.LayerNorm(s.encoder_hidden_size)  # default eps 1e-5, as released
        self.normk = nn.LayerNorm(s.encoder_hidden_size)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """queries [B, 64, D], image tokens [B, 1025, D] -> new queries [B, 64, D]."""
        queries = self.norm1(queries)  # lines 661-664: the residual below is the NORMED queries
        keys_values = torch.cat([queries, self.normk(image)], dim=1)  # [B, 1089, D]
        return self.output(self.attention(queries, keys_values), queries)


class AbstractorLayer(nn.Module):
    """One abstractor layer: only a ``crossattention`` block (lines 680-713)."""

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.crossattention = AbstractorCrossAttention(s)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.crossattention(queries, image)


class AbstractorEncoder(nn.Module):
    """The stack of `AbstractorLayer`s (attribute ``layers``)."""

    def __init__(self, s: AbstractorSettings) -> None:
        super().__init__()
        self.layers = nn.ModuleList([AbstractorLayer(s) for _ in range(s.num_hidden_layers)])

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            queries = layer(queries, image)
        return queries


class VisualAbstractor(nn.Module):
    """``model.visual_abstractor``: 64 learned queries read the ViT tokens, are projected to the
    LLM width, and a learned end token ``vit_eos`` is appended: 65 visual tokens (lines 780-941)."""

    def __init__(self, s: AbstractorSettings, language_hidden_size: int) -> None:
        super().__init__()
        self.encoder = AbstractorEncoder(s)
        self.visual_fc = nn.Linear(s.hidden_size, language_hidden_size)
        self.query_embeds = nn.Parameter(torch.zeros(1, s.num_learnable_queries, s.hidden_size))
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden_size))

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """ViT tokens [B, 1025, 1024] -> visual tokens [B, 65, 4096] (queries then vit_eos)."""
        batch = image_tokens.shape[0]
        queries = self.query_embeds.repeat(batch, 1, 1)  # [B, 64, 1024]
        queries = self.visual_fc(self.encoder(queries, image_tokens))  # [B, 64, 4096]
        return torch.cat([queries, self.vit_eos.repeat(batch, 1, 1)], dim=1)  # [B, 65, 4096]
