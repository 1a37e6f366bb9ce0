"""The `lite` semantic stand-in: packaged Lite0 image features read with the question by MiniLM.

It is NOT a language model's judgement; everything made with it says so (`is_stand_in`,
`STAND_IN_NOTE`). It exists so that MA-AGIQA's fusion can be trained offline on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from agiqa_lib.backbones.semantic_encoder import (SemanticEncoder, check_placement,
                                                  expand2square, masked_mean, mean_colour,
                                                  token_layout_dict)

STAND_IN_NOTE = ("lite stand-in: EfficientNet-Lite0 features read with the question by the "
                 "MiniLM sentence encoder; NOT an MLLM's judgement")


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
        check_placement(image_placement)
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
        self.pad_colour = mean_colour((0.5, 0.5, 0.5))  # Lite0 normalises with mean 0.5

    def token_layout(self, question: str) -> dict:
        """Where the stand-in's image tokens sit among the MiniLM tokens (notebook 03)."""
        tokens = self.tokenizer.convert_ids_to_tokens(self.tokenizer(question)["input_ids"])
        cut = 1 if self.image_placement == "before_text" else len(tokens) - 1
        n_image = self.config.n_image_tokens
        prompt = " ".join(tokens[:cut] + ["<img>"] * n_image + tokens[cut:])
        return token_layout_dict(prompt, tokens[:cut], tokens[cut:], n_image)

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
    from agiqa_lib.core.folding import fold_batchnorm

    # pooled 1280-d features; frozen, so its batch norms are folded (same output, 1.5x faster)
    trunk = fold_batchnorm(create_lite0(pretrained=True, num_classes=0).eval())
    path = minilm_path()
    text_model = AutoModel.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return LiteSemanticEncoder(trunk, text_model, tokenizer, config, image_placement).to(device)
