"""Semantic encoders for MA-AGIQA: one vector per (image, question) from a multimodal model.

MA-AGIQA asks an MLLM two questions about each image and keeps, instead of an answer, the
mean of the LAST layer's hidden states (after the final norm) over ALL positions, text and
image tokens alike: one forward pass, no generation. Three weight profiles:

- ``full``: by default the paper's MLLM, mPLUG-Owl2-LLaMA2-7B
  (``MAGAer13/mplug-owl2-llama2-7b``, 4096-d, 65 image tokens), run by this library's own
  implementation on the installed transformers (`agiqa_lib.backbones.mplug_owl2`: the hub
  checkpoint loads unchanged, no ``trust_remote_code``) with the prompt, pixels and pooling of
  MA-AGIQA's ``getFeature.py``. `create_mllm` sends any hub id or local folder whose
  config.json says ``model_type: mplug_owl2`` (or a known mPLUG-Owl2 / Q-Align hub id) there;
  every other id goes to the generic path: any transformers image-text-to-text model through
  ``AutoProcessor`` + ``AutoModelForImageTextToText`` and the model's own chat template
  (e.g. ``llava-hf/llava-1.5-7b-hf``: CLIP ViT-L/14-336, 576 image tokens).
- ``lite``: a CPU stand-in from packaged weights (EfficientNet-Lite0 image features projected
  to MiniLM token embeddings, read with the question by the MiniLM encoder, 384-d). It is
  NOT a language model's judgement; everything made with it says so (``is_stand_in``).
- ``tiny``: a tiny random mPLUG-Owl2 (`mplug_owl2.tiny`) saved to the cache and loaded back
  through the same loader as ``full``, so the default ``full`` code path is what the tests
  and the tiny notebook runs exercise. The tiny random LLaVA (`tiny_vlm`) stays available for
  the generic path: ``create_mllm("full", model_id=build_tiny_vlm(folder))``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from agiqa_lib.backbones.lite_semantic import load_lite_encoder
from agiqa_lib.backbones.semantic_encoder import (SemanticEncoder, check_placement,
                                                  expand2square, masked_mean, mean_colour,
                                                  token_layout_dict)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile

DEFAULT_FULL_MODEL = "MAGAer13/mplug-owl2-llama2-7b"  # the paper's MLLM
TINY_MPLUG_OWL2_ID = "tiny:mplug-owl2-tiny-v1:seed0"


class HFSemanticEncoder(SemanticEncoder):
    """A transformers image-text-to-text model asked one question per image; pooled states."""

    def __init__(self, model: nn.Module, processor, *, profile: str, model_id: str,
                 image_placement: str = "after_text") -> None:
        super().__init__()
        check_placement(image_placement)
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.profile = profile
        self.model_id = model_id
        self.image_placement = image_placement
        self.is_stand_in = False
        self.dim = int(model.config.get_text_config().hidden_size)
        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        self.pad_colour = mean_colour(mean)

    def build_prompt(self, question: str) -> str:
        """The chat-template prompt with one image placed before or after the question."""
        return build_prompt(self.processor, question, self.image_placement)

    def token_layout(self, question: str) -> dict:
        """Where the image tokens sit in the sequence the mean pools over (notebook 03).

        The processor expands the image token into the model's visual tokens (576 for
        LLaVA-1.5); a blank image of the padding colour stands in for a real one.
        """
        prompt = self.build_prompt(question)
        blank = Image.new("RGB", (224, 224), self.pad_colour)
        ids = self.processor(text=[prompt], images=[blank], return_tensors="pt")["input_ids"][0]
        tokenizer = self.processor.tokenizer
        image_id = getattr(self.processor, "image_token_id", None)
        if image_id is None:
            image_id = tokenizer.convert_tokens_to_ids(self.processor.image_token)
        where = (ids == image_id).nonzero().flatten().tolist()
        if not where:
            raise AgiqaError(f"the processor of {self.model_id} did not put image tokens in "
                             "the prompt; its token layout is unknown")
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        return token_layout_dict(prompt, tokens[:where[0]], tokens[where[-1] + 1:],
                                 where[-1] + 1 - where[0])

    def describe(self, question: str = "{question}") -> str:
        """Model, profile, width, and the exact prompt (image token shown once)."""
        return (f"{self.model_id} (profile {self.profile}, {type(self.model).__name__}, "
                f"{self.dim}-d hidden states, {next(self.model.parameters()).dtype})\n"
                f"prompt: {self.build_prompt(question)!r}\n"
                f"images padded to a square with the colour {self.pad_colour}")

    @torch.inference_mode()
    def encode(self, images: list[Image.Image], question: str | list[str]) -> torch.Tensor:
        """One forward pass per batch; mean of ``hidden_states[-1]`` over non-padding tokens."""
        questions = [question] * len(images) if isinstance(question, str) else list(question)
        if len(questions) != len(images):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        prompts = [self.build_prompt(q) for q in questions]
        squares = [expand2square(im, self.pad_colour) for im in images]
        inputs = self.processor(text=prompts, images=squares, return_tensors="pt", padding=True)
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                  for k, v in inputs.items()}
        out = self.model(**inputs, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]  # [B, L, D], after the final norm
        mask = inputs["attention_mask"]  # [B, L], 0 on padding (left or right)
        if hidden.shape[:2] != mask.shape:
            raise AgiqaError(f"model {self.model_id} returned hidden states of shape "
                             f"{tuple(hidden.shape)} that do not line up with the "
                             f"{tuple(mask.shape)} attention mask; this model is not supported")
        return masked_mean(hidden.float(), mask).cpu()


def build_prompt(processor, question: str, placement: str = "after_text") -> str:
    """Render the processor's chat template for one user turn: `question` + one image.

    The content list is ordered as `placement` asks. Some templates (LLaVA-1.5's) render every
    image first whatever the order; then the prompt is rebuilt from the text-only rendering
    with the image token put beside the question, which for LLaVA-1.5 and ``after_text``
    gives ``USER: {question}\\n<image> ASSISTANT:``, the shape of MA-AGIQA's released
    mPLUG-Owl2 prompt ``USER: {question}\\n<|image|> ASSISTANT:``.
    """
    check_placement(placement)
    text, image = {"type": "text", "text": question}, {"type": "image"}
    content = [text, image] if placement == "after_text" else [image, text]
    prompt = _render(processor, content)
    token = getattr(processor, "image_token", None)
    at_image, at_text = prompt.find(token) if token else -1, prompt.find(question)
    if at_image < 0 or at_text < 0:
        raise AgiqaError("the processor's chat template does not render the image token "
                         f"{token!r} and the question; pass a model with a multimodal chat "
                         "template")
    if (at_image > at_text) == (placement == "after_text"):
        return prompt
    text_only = _render(processor, [text])
    beside = f"{question}\n{token}" if placement == "after_text" else f"{token}\n{question}"
    return text_only.replace(question, beside, 1)


def _render(processor, content: list[dict]) -> str:
    conversation = [{"role": "user", "content": content}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True,
                                         tokenize=False)


def load_hf_encoder(model_id: str | os.PathLike, *, profile: str = "full",
                    image_placement: str = "after_text", device: str = "cpu",
                    dtype: torch.dtype | None = None, stable_id: str | None = None
                    ) -> HFSemanticEncoder:
    """Load processor + model by hub id or local folder (offline-safe, one clear error)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from agiqa_lib.backbones.weights import missing_full_weights

    source = str(model_id)
    local = Path(source).expanduser()
    looks_like_path = source.startswith((".", "/", "~")) or local.exists()
    if looks_like_path and not (local / "config.json").is_file():
        raise AgiqaError(f"MLLM folder {local} has no config.json; pass model_id=<a folder "
                         "saved with save_pretrained> or a hub id such as "
                         f"{DEFAULT_FULL_MODEL}")
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(str(local) if looks_like_path else source)
        model = AutoModelForImageTextToText.from_pretrained(
            str(local) if looks_like_path else source, dtype=dtype)
    except (OSError, ValueError) as err:
        raise missing_full_weights(
            f"the MLLM {source!r} ({type(err).__name__} while loading it)",
            f"run `hf download {source}`",
            "pass model_id=<local folder holding the model and its processor>") from None
    if stable_id is None:
        stable_id = f"local:{local.resolve()}" if looks_like_path else f"hf:{source}"
    return HFSemanticEncoder(model.to(device), processor, profile=profile,
                             model_id=stable_id, image_placement=image_placement)


def tiny_vlm_dir() -> Path:
    """Where the tiny random LLaVA of the generic path is kept (built by `build_tiny_vlm`)."""
    from agiqa_lib.backbones.tiny_vlm import TINY_VLM_VERSION
    from agiqa_lib.core.paths import cache_dir

    return cache_dir() / "models" / f"{TINY_VLM_VERSION}-seed0"


def tiny_mplug_owl2_dir() -> Path:
    """Where `create_mllm("tiny")` keeps its tiny random mPLUG-Owl2 (built on first use)."""
    from agiqa_lib.backbones.mplug_owl2.tiny import TINY_VERSION
    from agiqa_lib.core.paths import cache_dir

    return cache_dir() / "models" / f"{TINY_VERSION}-seed0"


def create_mllm(profile: str = "lite", model_id: str | os.PathLike | None = None,
                image_placement: str = "after_text", device: str = "cpu",
                dtype: torch.dtype | None = None, quantization: str | None = None
                ) -> SemanticEncoder:
    """Build the semantic encoder of a weight profile (see the module docstring).

    `model_id` (full only): hub id or local folder, default ``MAGAer13/mplug-owl2-llama2-7b``;
    mPLUG-Owl2 checkpoints run on this library's implementation, others on the generic
    transformers path. `dtype` (full/tiny): default fp16 on GPU, fp32 on CPU; the lite
    stand-in runs in fp32. `quantization` (full mPLUG-Owl2 only): ``"8bit"`` / ``"4bit"``
    with bitsandbytes on CUDA.
    """
    get_profile(profile)
    check_placement(image_placement)
    if profile != "full" and model_id is not None:
        raise AgiqaError(f"model_id is only used by profile 'full', not {profile!r}; drop it "
                         "or pass profile='full'")
    if profile != "full" and quantization is not None:
        raise AgiqaError(f"quantization is only used by profile 'full', not {profile!r}")
    if profile == "lite":
        if dtype not in (None, torch.float32):
            raise AgiqaError(f"the lite stand-in runs in float32 only, not {dtype}; drop dtype")
        return load_lite_encoder(image_placement, device)
    from agiqa_lib.backbones.mplug_owl2.encoder import MPLUGOwl2SemanticEncoder
    from agiqa_lib.backbones.mplug_owl2.loading import (is_mplug_owl2, load_mplug_owl2,
                                                        stable_model_id)

    if profile == "tiny":
        from agiqa_lib.backbones.mplug_owl2.tiny import build_tiny_mplug_owl2

        folder = build_tiny_mplug_owl2(tiny_mplug_owl2_dir(), seed=0)
        model, processor = load_mplug_owl2(folder, device=device, dtype=dtype)
        return MPLUGOwl2SemanticEncoder(model, processor, profile="tiny",
                                        model_id=TINY_MPLUG_OWL2_ID,
                                        image_placement=image_placement)
    source = model_id if model_id is not None else DEFAULT_FULL_MODEL
    if is_mplug_owl2(source):
        model, processor = load_mplug_owl2(source, device=device, dtype=dtype,
                                           quantization=quantization)
        return MPLUGOwl2SemanticEncoder(model, processor, profile="full",
                                        model_id=stable_model_id(source),
                                        image_placement=image_placement)
    if quantization is not None:
        raise AgiqaError("quantization is supported for mPLUG-Owl2 checkpoints only; drop it "
                         f"for {source}")
    return load_hf_encoder(source, profile="full", image_placement=image_placement,
                           device=device, dtype=dtype)
