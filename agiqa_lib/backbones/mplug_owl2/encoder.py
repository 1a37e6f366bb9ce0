"""MA-AGIQA's semantic vectors from mPLUG-Owl2, as the released ``getFeature.py`` makes them.

Per image and question (MA-AGIQA ``getFeature.py``): prompt = template ``mplug_owl2`` with
``question + "\\n<|image|>"`` as the user turn and an open assistant turn (lines 69-87), i.e.
``USER: {question}\\n<|image|> ASSISTANT:``; ids from ``tokenizer_image_token`` (BOS first,
line 91); the image in RGB, padded to a square with the processor's mean colour and
processed at 448 px, fp16 (lines 110-124); one forward pass with ``output_hidden_states``;
``hidden_states[-1]`` (the last layer after the final RMSNorm) averaged over ALL positions,
text and the 65 visual tokens alike (lines 134-136); one [1, 4096] vector per image.

Batching. The release batches 8 images of the same question (same length, no padding);
here a batch may also mix questions: rows are right-padded after splicing, padding is
causally invisible to the real tokens, and the mean skips it, so each vector equals the
one-image forward (tested on the tiny model). The two questions share one image encoding
(`encode_questions`). Vectors are returned in float32; the mean is taken in float32 over
the model's fp16 states (the release averages in fp16, within fp16 rounding of this).
"""

from __future__ import annotations

import torch
from PIL import Image

from agiqa_lib.backbones.semantic_encoder import IMAGE_PLACEMENTS, SemanticEncoder, masked_mean
from agiqa_lib.backbones.mplug_owl2.processing import (DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX,
                                                       MPLUGOwl2Processor, question_prompt,
                                                       tokenizer_image_token)
from agiqa_lib.core.errors import AgiqaError


class MPLUGOwl2SemanticEncoder(SemanticEncoder):
    """`SemanticEncoder` over an `MPLUGOwl2ForCausalLM` and its `MPLUGOwl2Processor`."""

    def __init__(self, model, processor: MPLUGOwl2Processor, *, profile: str, model_id: str,
                 image_placement: str = "after_text") -> None:
        super().__init__()
        if image_placement not in IMAGE_PLACEMENTS:
            raise AgiqaError(f"unknown image_placement {image_placement!r}; choose "
                             f"{' or '.join(IMAGE_PLACEMENTS)}")
        self.model = model.eval()
        self.processor = processor
        self.profile = profile
        self.model_id = model_id
        self.image_placement = image_placement
        self.is_stand_in = False
        self.dim = int(model.config.hidden_size)
        self.n_image_tokens = int(model.config.n_visual_tokens)
        self.pad_colour = processor.pad_colour

    def build_prompt(self, question: str) -> str:
        """``USER: {question}\\n<|image|> ASSISTANT:`` (image after the text, as released)."""
        return question_prompt(question, self.image_placement)

    def token_layout(self, question: str) -> dict:
        """Where the image sits in the sequence the mean pools over (for notebook 03).

        Returns the prompt, the token count of each kind, the [start, end) span of the visual
        tokens, the total length, and the text tokens (strings) before and after the image.
        """
        ids = tokenizer_image_token(self.build_prompt(question), self.processor.tokenizer)
        slot = ids.index(IMAGE_TOKEN_INDEX)
        before, after = ids[:slot], ids[slot + 1:]
        tokens = self.processor.tokenizer.convert_ids_to_tokens
        n_text = len(before) + len(after)
        return {"prompt": self.build_prompt(question), "n_text_tokens": n_text,
                "n_image_tokens": self.n_image_tokens,
                "n_positions": n_text + self.n_image_tokens,
                "image_span": (len(before), len(before) + self.n_image_tokens),
                "text_before": tokens(before), "text_after": tokens(after)}

    def describe(self, question: str = "{question}") -> str:
        """Model, profile, width, the prompt, and how many image vs text tokens are pooled."""
        layout = self.token_layout(question)
        start, end = layout["image_span"]
        dtype = next(self.model.parameters()).dtype
        share = layout["n_image_tokens"] / layout["n_positions"]
        return (f"{self.model_id} (profile {self.profile}, mPLUG-Owl2, {self.dim}-d hidden "
                f"states, {dtype})\n"
                f"prompt: {layout['prompt']!r}\n"
                f"sequence: {layout['n_positions']} positions = {layout['n_text_tokens']} text "
                f"tokens (BOS included) + {layout['n_image_tokens']} image tokens at positions "
                f"{start}..{end - 1} (replacing {DEFAULT_IMAGE_TOKEN}); the mean pools all of "
                f"them ({share:.0%} image)\n"
                f"images padded to a square with the colour {self.pad_colour}")

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        weight = self.model.model.vision_model.embeddings.patch_embed.weight
        return weight.device, weight.dtype

    @torch.inference_mode()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """Visual tokens [B, 65, D] of `images` (square-padded, processed, ViT + abstractor)."""
        device, dtype = self._device_dtype()
        pixels = self.processor.pixel_values(images).to(device, dtype)  # [B, 3, 448, 448]
        return self.model.model.encode_images(pixels)

    @torch.inference_mode()
    def pooled(self, image_features: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """Mean of the last hidden states [B, D] for precomputed visual tokens + questions."""
        if len(questions) != image_features.shape[0]:
            raise ValueError(f"{image_features.shape[0]} images but {len(questions)} questions")
        device, _ = self._device_dtype()
        ids, mask = self.processor.encode_prompts([self.build_prompt(q) for q in questions])
        out = self.model(ids.to(device), attention_mask=mask.to(device),
                         image_features=image_features, output_hidden_states=True,
                         compute_logits=False)
        hidden = out.hidden_states[-1]  # [B, L, D], after the final norm
        return masked_mean(hidden.float(), out.attention_mask).cpu()  # [B, D]

    def encode(self, images: list[Image.Image], question: str | list[str]) -> torch.Tensor:
        """Pooled vectors [B, D] (float32, CPU): one question, or one question per image."""
        questions = [question] * len(images) if isinstance(question, str) else list(question)
        if len(questions) != len(images):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        return self.pooled(self.image_features(images), questions)

    def encode_questions(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        """[B, Q, D]: every image asked every question, the image encoded once."""
        features = self.image_features(images)
        return torch.stack([self.pooled(features, [q] * len(images)) for q in questions], dim=1)
