"""One interface to run a CLIP text tower on token embeddings, for prompt learning (CoOp).

open_clip has two kinds of text towers: the OpenAI-style `TextTransformer`, whose modules sit
on a `CLIP` model itself (token + positional embedding, causal transformer, final LayerNorm,
pooling at the end-of-text token, `text_projection`), and `HFTextEncoder` on a `CustomTextCLIP`
(a Hugging Face encoder fed `inputs_embeds`, padding masked, a pooler, then `proj`). `TextTower`
hides the difference: embed ids, replace some embeddings with learned context vectors, encode.

Both tokenizers put one start token first ([SOS] / [CLS]), and "X" is a single token in both,
so a prompt "X X ... X {class}." keeps its n placeholders at positions 1..n.
"""

from __future__ import annotations

from typing import Callable, Sequence

import open_clip
import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.transformer import text_global_pool
from torch import nn

from agiqa_lib.core.errors import AgiqaError

PLACEHOLDER = "X"
CONTEXT_START = 1  # the placeholders follow the start token


class TextTower:
    """Run a frozen open_clip text tower from token embeddings (ids still mark EOT and padding).

    Holds a reference to `clip_model`, not a copy; it is a plain object, not an `nn.Module`, so
    a prompt learner that keeps one does not register the CLIP weights as its own.
    """

    def __init__(self, clip_model: nn.Module, tokenizer: Callable | None = None) -> None:
        if isinstance(clip_model, open_clip.CustomTextCLIP) and isinstance(clip_model.text,
                                                                           HFTextEncoder):
            self.kind = "hf"
            self._embedding = clip_model.text.transformer.get_input_embeddings()
        elif isinstance(clip_model, open_clip.CLIP):
            self.kind = "openai"
            self._embedding = clip_model.token_embedding
        else:
            raise AgiqaError(f"TextTower supports open_clip CLIP and CustomTextCLIP with a Hugging "
                             f"Face text tower, not {type(clip_model).__name__}.")
        self.model = clip_model
        self.tokenizer = tokenizer or _default_tokenizer(clip_model, self.kind)

    @property
    def width(self) -> int:
        """Width of one token embedding (the size of a context vector)."""
        return int(self._embedding.embedding_dim)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the token embeddings (context vectors should match it)."""
        return self._embedding.weight.dtype

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length] on the model's device."""
        return self.tokenizer(list(texts)).to(self._embedding.weight.device)

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids: [B, L] -> [B, L, width] (no positions added)."""
        return self._embedding(ids)

    def placeholder_prompts(self, class_names: Sequence[str], n_ctx: int) -> torch.Tensor:
        """Ids of "X X ... X {class}." prompts; checks the n_ctx placeholders sit at 1..n_ctx."""
        prompts = [" ".join([PLACEHOLDER] * n_ctx + [f"{name}."]) for name in class_names]
        ids = self.tokenize(prompts)
        placeholder = self.tokenize([PLACEHOLDER])[0, CONTEXT_START]
        if not bool((ids[:, CONTEXT_START:CONTEXT_START + n_ctx] == placeholder).all()):
            raise AgiqaError(f"the tokenizer does not map {PLACEHOLDER!r} to one token at "
                             f"positions {CONTEXT_START}..{n_ctx}: this text tower cannot host "
                             f"{n_ctx} context vectors.")
        return ids

    def trimmed(self, ids: torch.Tensor) -> torch.Tensor:
        """`ids` [B, L] cut after the last position that can change the text features.

        Exact for both towers: the Hugging Face encoder masks padding (so the all-padding tail
        contributes nothing to the masked mean), and the OpenAI tower is causal and pools at the
        end-of-text token (`argmax`/`eos` pooling), so positions after the last EOT never reach
        a pooled feature. For prompt learning this cuts a step's text forward from 77
        positions to the longest prompt (about 20). Other poolings are returned unchanged.
        """
        if self.kind == "hf":
            pad = self.model.text.config.pad_token_id
            keep = (ids != pad).any(dim=0)
        else:
            pool = getattr(self.model, "text_pool_type", "argmax")
            if pool not in ("argmax", "eos") or self.model.attn_mask is None:
                return ids
            eos = (ids.argmax(dim=-1) if pool == "argmax"
                   else (ids == self.model.text_eos_id).int().argmax(dim=-1))
            keep = torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)
            keep[:int(eos.max()) + 1] = True
        return ids[:, :int(keep.nonzero().max()) + 1]

    def insert_context(self, embeds: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Replace the placeholder embeddings with context vectors ([n_ctx, W] or [B, n_ctx, W])."""
        n_ctx = context.shape[-2]
        context = context.to(embeds.dtype).expand(embeds.shape[0], n_ctx, embeds.shape[-1])
        return torch.cat([embeds[:, :CONTEXT_START], context,
                          embeds[:, CONTEXT_START + n_ctx:]], dim=1)

    def encode_with_embeddings(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Text features [B, embed_dim] from input embeddings [B, L, W] and their ids [B, L].

        The ids only locate the end-of-text token and the padding; they may be `trimmed`.

        With `embeds = token_embedding(ids)` this equals `clip_model.encode_text(ids)`.
        """
        if self.kind == "hf":
            return self._encode_hf(embeds, ids)
        return self._encode_openai(embeds, ids)

    def _encode_openai(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """OpenAI-style tower: add positions, causal transformer, LN, pool at EOT, project."""
        model = self.model
        cast_dtype = model.transformer.get_cast_dtype()
        length = embeds.shape[1]  # <= context length when the prompts were trimmed
        x = embeds.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)  # [B, L, W]
        mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
        x = model.transformer(x, attn_mask=mask)
        x = model.ln_final(x)
        x = text_global_pool(x, ids, model.text_pool_type,
                             eos_token_id=getattr(model, "text_eos_id", None))  # [B, W]
        projection = model.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    def _encode_hf(self, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Hugging Face tower: encoder on inputs_embeds with the padding mask, pool, project."""
        text = self.model.text
        attention_mask = (ids != text.config.pad_token_id).long()  # [B, L]
        out = text.transformer(inputs_embeds=embeds, attention_mask=attention_mask)
        pooled = text.pooler(out, attention_mask)  # [B, hidden]
        return text.proj(pooled)


def _default_tokenizer(clip_model: nn.Module, kind: str) -> Callable:
    """The tokenizer a model was built with, when the caller has none at hand."""
    if kind == "hf":
        return open_clip.tokenizer.HFTokenizer(
            clip_model.text.config.name_or_path,
            context_length=open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH)
    return open_clip.SimpleTokenizer(context_length=clip_model.context_length)
