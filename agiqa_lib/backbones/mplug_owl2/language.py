"""LLaMA-2 with mPLUG-Owl2's modality-adaptive modules, on transformers' own LLaMA pieces.

mPLUG-Owl2 (``model/modeling_llama2.py``) changes three things in each LLaMA decoder layer:
``input_layernorm``, ``post_attention_layernorm`` and the ``k_proj`` / ``v_proj`` projections
become a ``MultiwayNetwork`` (``model/multiway.py``): two copies, ``multiway.0`` for text
positions and ``multiway.1`` for visual positions, chosen per position by
``modality_indicators`` (0 text, 1 image). ``q_proj``, ``o_proj`` and the MLP stay shared.

Everything else is transformers' current LLaMA: `LlamaRMSNorm`, `LlamaMLP`,
`apply_rotary_pos_emb` (cos/sin from `LlamaRotaryEmbedding`, held by the model), and the
attention kernels of ``ALL_ATTENTION_FUNCTIONS`` (eager = the release's explicit
softmax(QK^T/sqrt(d)) in float32, or sdpa).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (LlamaMLP, LlamaRMSNorm,
                                                      apply_rotary_pos_emb,
                                                      eager_attention_forward)

TEXT, VISUAL = 0, 1  # modality_indicators values (release modeling_mplug_owl2.py:162-163)


class Multiway(nn.Module):
    """``MultiwayNetwork``: branch ``multiway.{i}`` applied to the positions whose modality is i.

    As released (multiway.py:14-35) each branch runs only on its own positions (gathered, run,
    scattered back), so text positions never touch the visual weights and vice versa.
    """

    def __init__(self, make: Callable[[], nn.Module], n_ways: int = 2) -> None:
        super().__init__()
        self.multiway = nn.ModuleList([make() for _ in range(n_ways)])

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """x [B, L, D_in], modality [B, L] in {0, 1} -> [B, L, D_out]."""
        if len(self.multiway) == 1:
            return self.multiway[0](x)
        out: torch.Tensor | None = None
        for index, branch in enumerate(self.multiway):
            chosen = modality == index  # [B, L]
            if not bool(chosen.any()):
                continue
            y = branch(x[chosen])  # [N, D_out]
            if out is None:
                out = y.new_zeros(*x.shape[:-1], y.shape[-1])
            out[chosen] = y
        if out is None:  # no position at all (L == 0) or an unknown modality everywhere
            raise ValueError("modality_indicators must be 0 (text) or 1 (visual) per position")
        return out


class ModalityAdaptiveAttention(nn.Module):
    """LLaMA attention whose K and V projections are `Multiway` (modeling_llama2.py:33-163)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = 0.0
        self.is_causal = True
        width, bias = config.hidden_size, config.attention_bias
        kv_width = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(width, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = Multiway(lambda: nn.Linear(width, kv_width, bias=bias))
        self.v_proj = Multiway(lambda: nn.Linear(width, kv_width, bias=bias))
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, width, bias=bias)

    def forward(self, hidden: torch.Tensor, modality: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        """hidden [B, L, 4096], additive mask [B, 1, L, L] -> [B, L, 4096]."""
        shape = (*hidden.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden).view(shape).transpose(1, 2)  # [B, 32, L, 128]
        k = self.k_proj(hidden, modality).view(shape).transpose(1, 2)
        v = self.v_proj(hidden, modality).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                       eager_attention_forward)
        out, _ = attend(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling)
        return self.o_proj(out.reshape(*hidden.shape[:-1], -1).contiguous())


class ModalityAdaptiveDecoderLayer(nn.Module):
    """Pre-norm LLaMA block with `Multiway` RMSNorms (modeling_llama2.py:167-237)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = ModalityAdaptiveAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = Multiway(lambda: LlamaRMSNorm(width, eps=eps))
        self.post_attention_layernorm = Multiway(lambda: LlamaRMSNorm(width, eps=eps))

    def forward(self, hidden: torch.Tensor, modality: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, L, 4096] -> [B, L, 4096]."""
        normed = self.input_layernorm(hidden, modality)
        hidden = hidden + self.self_attn(normed, modality, position_embeddings, attention_mask)
        return hidden + self.mlp(self.post_attention_layernorm(hidden, modality))


def causal_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2-D padding mask [B, L] (1 = token) -> additive causal mask [B, 1, L, L] in `dtype`.

    Position i sees j <= i where j is a token. A padding query keeps its own position open so
    no row is fully masked (its output is never used).
    """
    length = attention_mask.shape[-1]
    device = attention_mask.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [L, L]
    allowed = causal[None] & attention_mask.bool()[:, None, :]  # [B, L, L]
    allowed |= torch.eye(length, dtype=torch.bool, device=device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # [B, 1, L, L]
