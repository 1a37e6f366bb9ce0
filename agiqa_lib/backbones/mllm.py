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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from agiqa_lib.core.errors import AgiqaError

PROFILES = ("full", "lite", "tiny")
IMAGE_PLACEMENTS = ("after_text", "before_text")
DEFAULT_FULL_MODEL = "MAGAer13/mplug-owl2-llama2-7b"  # the paper's MLLM
TINY_MPLUG_OWL2_ID = "tiny:mplug-owl2-tiny-v1:seed0"
STAND_IN_NOTE = ("lite stand-in: EfficientNet-Lite0 features read with the question by the "
                 "MiniLM sentence encoder; NOT an MLLM's judgement")


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


def _mean_colour(mean: tuple[float, ...] | list[float]) -> tuple[int, int, int]:
    """The processor's normalisation mean as an 8-bit RGB colour (int(x * 255), as released)."""
    return tuple(int(x * 255) for x in mean)  # type: ignore[return-value]


# --------------------------------------------------------------------------- full / tiny


class HFSemanticEncoder(SemanticEncoder):
    """A transformers image-text-to-text model asked one question per image; pooled states."""

    def __init__(self, model: nn.Module, processor, *, profile: str, model_id: str,
                 image_placement: str = "after_text") -> None:
        super().__init__()
        _check_placement(image_placement)
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.profile = profile
        self.model_id = model_id
        self.image_placement = image_placement
        self.is_stand_in = False
        self.dim = int(model.config.get_text_config().hidden_size)
        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        self.pad_colour = _mean_colour(mean)

    def build_prompt(self, question: str) -> str:
        """The chat-template prompt with one image placed before or after the question."""
        return build_prompt(self.processor, question, self.image_placement)

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
    _check_placement(placement)
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


# --------------------------------------------------------------------------- lite


@dataclass(frozen=True)
class LiteStandInConfig:
    """Lite stand-in: how many image tokens the Lite0 features become, and the projection seed."""

    n_image_tokens: int = 4
    seed: int = 0
    image_size: int = 224
    version: str = "v1"


class LiteSemanticEncoder(SemanticEncoder):
    """Stand-in: Lite0 image features -> a few MiniLM token embeddings, read with the question.

    Lite0's pooled ImageNet features (1280-d) go through a fixed random linear map (seeded)
    to `n_image_tokens` vectors, each rescaled to the mean norm of MiniLM's word embeddings,
    and inserted before or after the question tokens; the MiniLM encoder reads the sequence
    and its last hidden states are mean-pooled over all positions (384-d). Not an MLLM.
    """

    def __init__(self, image_trunk: nn.Module, text_model: nn.Module, tokenizer,
                 config: LiteStandInConfig = LiteStandInConfig(),
                 image_placement: str = "after_text") -> None:
        super().__init__()
        _check_placement(image_placement)
        self.config = config
        self.image_trunk = image_trunk
        self.text_model = text_model
        self.tokenizer = tokenizer
        width = text_model.config.hidden_size
        self.project = nn.Linear(image_trunk.num_features, config.n_image_tokens * width)
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            nn.init.normal_(self.project.weight, std=image_trunk.num_features ** -0.5,
                            generator=generator)
            self.project.bias.zero_()
            word_norms = text_model.get_input_embeddings().weight.norm(dim=-1)
        self.register_buffer("token_norm", word_norms.mean())
        self.eval().requires_grad_(False)
        self.profile = "lite"
        self.image_placement = image_placement
        self.is_stand_in = True
        self.dim = int(width)
        self.model_id = (f"lite:effnet-lite0+minilm-l6:tokens{config.n_image_tokens}"
                         f"-seed{config.seed}:{config.version}")
        self.pad_colour = _mean_colour((0.5, 0.5, 0.5))  # Lite0 normalises with mean 0.5

    def describe(self, question: str = "{question}") -> str:
        """Model, width and the token layout of the stand-in."""
        image = " ".join(["<img>"] * self.config.n_image_tokens)
        layout = (f"[CLS] {question} {image} [SEP]" if self.image_placement == "after_text"
                  else f"[CLS] {image} {question} [SEP]")
        return (f"{self.model_id} (profile lite, {self.dim}-d)\n{STAND_IN_NOTE}\n"
                f"encoder input: {layout}")

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """Pixels [B,3,H,W] + question tokens [B,L] (with [CLS]/[SEP]) -> pooled [B, 384]."""
        return self.read(self.image_trunk(pixels), input_ids, attention_mask)

    def read(self, features: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor) -> torch.Tensor:
        """Lite0 features [B, 1280] read with the question tokens by MiniLM -> pooled [B, 384]."""
        batch = features.shape[0]
        image_tokens = self.project(features).view(batch, self.config.n_image_tokens, -1)
        image_tokens = F.normalize(image_tokens, dim=-1) * self.token_norm  # [B, P, W]
        words = self.text_model.get_input_embeddings()(input_ids)  # [B, L, W]
        ones = attention_mask.new_ones(batch, self.config.n_image_tokens)
        if self.image_placement == "before_text":  # [CLS] image question [SEP]
            embeds = torch.cat([words[:, :1], image_tokens, words[:, 1:]], dim=1)
            mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        else:  # [CLS] question image [SEP]: image tokens right after the last question token
            embeds, mask = _insert_before_sep(words, attention_mask, image_tokens)
        hidden = self.text_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return masked_mean(hidden, mask)

    @torch.inference_mode()
    def encode(self, images: list[Image.Image], question: str | list[str]) -> torch.Tensor:
        """Stand-in vectors [B, 384] for the images asked `question`."""
        questions = [question] * len(images) if isinstance(question, str) else list(question)
        if len(questions) != len(images):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        return self._read_all(self._features(images), [questions])[:, 0]

    @torch.inference_mode()
    def encode_questions(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        """[B, Q, 384]; the image features are computed once for all questions."""
        return self._read_all(self._features(images), [[q] * len(images) for q in questions])

    def _features(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in images])
        return self.image_trunk(pixels.to(self.token_norm.device))  # [B, 1280]

    def _read_all(self, features: torch.Tensor, question_lists: list[list[str]]) -> torch.Tensor:
        out = []
        for questions in question_lists:  # one list of B questions per output column
            tokens = self.tokenizer(questions, padding=True, return_tensors="pt")
            tokens = tokens.to(features.device)
            out.append(self.read(features, tokens["input_ids"], tokens["attention_mask"]))
        return torch.stack(out, dim=1).float().cpu()  # [B, Q, 384]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Pad to square (mean colour), resize bicubic, scale to [-1, 1] (Lite0's mean=std=0.5)."""
        size = self.config.image_size
        square = expand2square(image, self.pad_colour).resize((size, size), Image.BICUBIC)
        pixels = torch.frombuffer(bytearray(square.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(size, size, 3).permute(2, 0, 1).float() / 255.0
        return (pixels - 0.5) / 0.5


def _insert_before_sep(words: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert `extra` [B,P,W] before each row's [SEP] (last unmasked token); padding stays last."""
    batch, length, width = words.shape
    n_extra = extra.shape[1]
    lengths = mask.sum(dim=1)  # [B], [SEP] sits at lengths - 1 (right padding)
    out = words.new_zeros(batch, length + n_extra, width)
    out_mask = mask.new_zeros(batch, length + n_extra)
    for row in range(batch):
        sep = int(lengths[row]) - 1
        out[row] = torch.cat([words[row, :sep], extra[row], words[row, sep:]])
        out_mask[row, : sep + 1 + n_extra] = 1
    return out, out_mask


def load_lite_encoder(image_placement: str = "after_text", device: str = "cpu",
                      config: LiteStandInConfig = LiteStandInConfig()) -> LiteSemanticEncoder:
    """Assemble the lite stand-in from the packaged Lite0 and MiniLM weights (offline)."""
    from transformers import AutoModel, AutoTokenizer

    from agiqa_lib.backbones.weights import create_lite0, minilm_path

    trunk = create_lite0(pretrained=True, num_classes=0).eval()  # pooled 1280-d features
    path = minilm_path()
    text_model = AutoModel.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return LiteSemanticEncoder(trunk, text_model, tokenizer, config, image_placement).to(device)


# --------------------------------------------------------------------------- factory


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
    if profile not in PROFILES:
        raise AgiqaError(f"unknown MLLM profile {profile!r}; choose one of {', '.join(PROFILES)}")
    _check_placement(image_placement)
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


def _check_placement(image_placement: str) -> None:
    if image_placement not in IMAGE_PLACEMENTS:
        raise AgiqaError(f"unknown image_placement {image_placement!r}; choose "
                         f"{' or '.join(IMAGE_PLACEMENTS)}")
