"""mPLUG-Owl2 models on the current transformers: `MPLUGOwl2Model`, `MPLUGOwl2ForCausalLM`.

Module tree and names follow the release (mPLUG-Owl2 ``model/modeling_mplug_owl2.py``:
``MPLUGOwl2LlamaForCausalLM`` = ``model`` + ``lm_head``; ``model`` = LLaMA's ``embed_tokens``,
``layers``, ``norm`` + ``vision_model`` + ``visual_abstractor``), so ``from_pretrained`` reads
the hub's shards with their key names unchanged. The only hub keys the model has no tensor
for are per-layer ``self_attn.rotary_emb.inv_freq`` buffers (written by the released
converter, ``convert_mplug_owl2_weight_to_hf.py:241``), ignored on load: RoPE is computed.

Images are spliced in as released (``prepare_inputs_labels_for_multimodal``, mPLUG-Owl2's
lines 66-197, the Q-Align copy's 108-237): each ``<|image|>`` id (-200) in ``input_ids`` is
replaced by that image's 65 visual tokens (modality 1), every other position is text
(modality 0). Differences, all for batching: the attention mask and position ids follow
each row's own tokens (the release could not batch rows of different lengths), and rows are
right-padded after splicing. No generation (`generate`) is provided: feature extraction and
scoring need one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from agiqa_lib.backbones.mplug_owl2.config import MPLUGOwl2Config
from agiqa_lib.backbones.mplug_owl2.language import (TEXT, VISUAL, ModalityAdaptiveDecoderLayer,
                                                     causal_padding_mask)
from agiqa_lib.backbones.mplug_owl2.processing import IMAGE_TOKEN_INDEX
from agiqa_lib.backbones.mplug_owl2.vision import (AbstractorAttention, VisionEmbeddings,
                                                   VisionModel, VisualAbstractor)


@dataclass
class MPLUGOwl2Output(ModelOutput):
    """Forward result. ``hidden_states``: inputs of each layer, then the final-normed output
    (``hidden_states[-1]`` = ``last_hidden_state``, as released); ``attention_mask`` and
    ``modality_indicators`` are those of the spliced sequence [B, L]."""

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None
    modality_indicators: torch.Tensor | None = None


@dataclass
class SplicedInputs:
    """The LLM's inputs after image splicing, all [B, L] except ``inputs_embeds`` [B, L, D]."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    modality_indicators: torch.Tensor
    position_ids: torch.Tensor


class MPLUGOwl2PreTrainedModel(PreTrainedModel):
    """Shared loading settings and weight initialisation."""

    config: MPLUGOwl2Config
    config_class = MPLUGOwl2Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["ModalityAdaptiveDecoderLayer", "VisionLayer", "AbstractorLayer"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' defaults plus the released model's own parameters and buffers."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, VisionEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.position_embedding, std=std)
        elif isinstance(module, VisualAbstractor):
            init.normal_(module.query_embeds, std=std)
            init.normal_(module.vit_eos, std=std)
        elif isinstance(module, AbstractorAttention):  # fixed tables, when a file lacks them
            q_pos, k_pos = AbstractorAttention.position_tables(self.config.abstractor)
            init.copy_(module.q_pos_embed, q_pos)
            init.copy_(module.k_pos_embed, k_pos)


class MPLUGOwl2Model(MPLUGOwl2PreTrainedModel):
    """``model``: the modality-adaptive LLaMA plus ``vision_model`` and ``visual_abstractor``."""

    def __init__(self, config: MPLUGOwl2Config) -> None:
        super().__init__(config)
        config.check_supported()
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([ModalityAdaptiveDecoderLayer(config, index)
                                     for index in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.vision_model = VisionModel(config.vision)
        self.visual_abstractor = VisualAbstractor(config.abstractor, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, 448, 448] -> visual tokens [N, 65, 4096] (ViT then abstractor)."""
        dtype = self.vision_model.embeddings.patch_embed.weight.dtype
        tokens = self.vision_model(pixel_values.to(dtype))  # [N, 1025, 1024]
        return self.visual_abstractor(tokens)  # [N, 65, 4096]

    def splice(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_features: torch.Tensor | None) -> SplicedInputs:
        """Replace each -200 id by the next image's visual tokens (in batch order)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n_slots = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        n_images = 0 if image_features is None else image_features.shape[0]
        if n_slots != n_images:
            raise ValueError(f"input_ids hold {n_slots} <|image|> tokens but {n_images} images "
                             "were given; pass one image per <|image|> token")
        embeds, masks, modalities, used = [], [], [], 0
        for ids, mask in zip(input_ids, attention_mask):
            parts, part_masks, part_modality, start = [], [], [], 0
            for slot in (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
                weight = self.embed_tokens.weight
                feats = image_features[used].to(weight.device, weight.dtype)  # [65, D]
                used += 1
                parts += [self.embed_tokens(ids[start:slot]), feats]
                part_masks += [mask[start:slot], mask[slot].repeat(feats.shape[0])]
                part_modality += [torch.full_like(ids[start:slot], TEXT),
                                  torch.full((feats.shape[0],), VISUAL, dtype=ids.dtype,
                                             device=ids.device)]
                start = slot + 1
            parts.append(self.embed_tokens(ids[start:]))
            part_masks.append(mask[start:])
            part_modality.append(torch.full_like(ids[start:], TEXT))
            embeds.append(torch.cat(parts))
            masks.append(torch.cat(part_masks))
            modalities.append(torch.cat(part_modality))
        inputs_embeds = nn.utils.rnn.pad_sequence(embeds, batch_first=True)  # [B, L, D], right pad
        mask = nn.utils.rnn.pad_sequence(masks, batch_first=True)  # [B, L], 0 on padding
        modality = nn.utils.rnn.pad_sequence(modalities, batch_first=True)  # padding = text (0)
        position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)  # each row's own token count
        return SplicedInputs(inputs_embeds, mask, modality, position_ids)

    def forward(self, inputs_embeds: torch.Tensor, modality_indicators: torch.Tensor,
                attention_mask: torch.Tensor, position_ids: torch.Tensor,
                output_hidden_states: bool = False) -> MPLUGOwl2Output:
        """The LLM on spliced inputs [B, L, D] -> final-normed states [B, L, D]."""
        causal = causal_padding_mask(attention_mask, inputs_embeds.dtype)  # [B, 1, L, L]
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden, states = inputs_embeds, []
        for layer in self.layers:
            if output_hidden_states:
                states.append(hidden)
            hidden = layer(hidden, modality_indicators, position_embeddings, causal)
        hidden = self.norm(hidden)  # [B, L, 4096], as modeling_llama2.py:353-357
        if output_hidden_states:
            states.append(hidden)
        return MPLUGOwl2Output(last_hidden_state=hidden,
                               hidden_states=tuple(states) if output_hidden_states else None,
                               attention_mask=attention_mask,
                               modality_indicators=modality_indicators)


class MPLUGOwl2ForCausalLM(MPLUGOwl2PreTrainedModel):
    """``MPLUGOwl2LlamaForCausalLM``: `MPLUGOwl2Model` (``model``) + ``lm_head``."""

    def __init__(self, config: MPLUGOwl2Config) -> None:
        super().__init__(config)
        self.model = MPLUGOwl2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None,
                output_hidden_states: bool = False, compute_logits: bool = True,
                **_: object) -> MPLUGOwl2Output:
        """Token ids [B, T] with -200 image slots + pixels [N, 3, 448, 448] -> outputs.

        `image_features` [N, 65, D] (from ``model.encode_images``) may replace `images` to reuse
        one image encoding for several prompts. `compute_logits=False` skips ``lm_head``.
        """
        if images is not None and image_features is not None:
            raise ValueError("pass images or image_features, not both")
        if images is not None:
            image_features = self.model.encode_images(images)
        spliced = self.model.splice(input_ids, attention_mask, image_features)
        out = self.model(spliced.inputs_embeds, spliced.modality_indicators,
                         spliced.attention_mask, spliced.position_ids, output_hidden_states)
        if compute_logits:
            out.logits = self.lm_head(out.last_hidden_state)  # [B, L, vocab]
        return out
