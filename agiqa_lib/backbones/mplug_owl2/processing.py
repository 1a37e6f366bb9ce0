"""Prompts, tokens and pixels for mPLUG-Owl2, as the released code builds them.

- ``mplug_owl2`` conversation template (mPLUG-Owl2 ``conversation.py:277-287``): style
  TWO_NO_SYS (the system text is never rendered), roles USER / ASSISTANT, separators " " and
  "</s>"; one user turn plus an open assistant turn renders as
  ``"USER: {message} ASSISTANT:"`` (``conversation.py:64-73``).
- `tokenizer_image_token` (``mm_utils.py:53-72``): the prompt is split at ``<|image|>``, each
  piece is tokenized on its own (so each gets the tokenizer's BOS and leading "▁"), the BOS
  is kept once at the start and every ``<|image|>`` becomes the id -200. Pieces are read as
  the release's sentencepiece tokenizer read them (`read_text_as_sentencepiece`).
- Pixels (MA-AGIQA ``getFeature.py:111-124``): the image, in RGB, padded to a centred square
  with the processor's mean colour ``int(255 * mean)``, then the CLIP image processor of the
  checkpoint (448 px, bicubic, OpenAI CLIP mean/std). The PIL backend of the processor is
  used, as in the transformers release the original code ran on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from agiqa_lib.backbones.semantic_encoder import expand2square

IMAGE_TOKEN_INDEX = -200  # constants.py:8
DEFAULT_IMAGE_TOKEN = "<|image|>"  # constants.py:9


@dataclass(frozen=True)
class ConversationTemplate:
    """A TWO_NO_SYS conversation: ``role: message`` turns joined by alternating separators."""

    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str

    def render(self, turns: list[tuple[str, str | None]]) -> str:
        """The prompt of `turns` [(role, message or None for an open turn)], as get_prompt()."""
        text, seps = "", (self.sep, self.sep2)
        for index, (role, message) in enumerate(turns):
            text += f"{role}: {message}{seps[index % 2]}" if message else f"{role}:"
        return text


MPLUG_OWL2_TEMPLATE = ConversationTemplate(
    system="A chat between a curious human and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>")


def question_prompt(question: str, image_placement: str = "after_text") -> str:
    """One user turn with the question and one image, then the open assistant turn.

    ``after_text`` is MA-AGIQA's ``question + "\\n" + "<|image|>"`` (getFeature.py:75):
    ``USER: {question}\\n<|image|> ASSISTANT:``. ``before_text`` puts the image first:
    ``USER: <|image|>\\n{question} ASSISTANT:``.
    """
    if image_placement == "after_text":
        message = f"{question}\n{DEFAULT_IMAGE_TOKEN}"
    elif image_placement == "before_text":
        message = f"{DEFAULT_IMAGE_TOKEN}\n{question}"
    else:
        raise ValueError(f"unknown image_placement {image_placement!r}")
    user, assistant = MPLUG_OWL2_TEMPLATE.roles
    return MPLUG_OWL2_TEMPLATE.render([(user, message), (assistant, None)])


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """Token ids of `prompt` with IMAGE_TOKEN_INDEX (-200) where ``<|image|>`` stands."""
    pieces = [tokenizer(piece).input_ids if piece else [] for piece in
              prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    drop = 1 if pieces and pieces[0] and pieces[0][0] == bos else 0
    ids = [bos] if drop else []
    for index, piece in enumerate(pieces):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(piece[drop:])  # each piece's own BOS is dropped (mm_utils.py:61-66)
    return ids


def read_text_as_sentencepiece(tokenizer) -> None:
    """Make a LLaMA tokenizer of the current transformers read text as the release's did.

    The release ran the slow sentencepiece `LlamaTokenizer` of transformers 4.31
    (``builder.py:96``/``116``, ``use_fast=False``): every text gets the dummy prefix "▁" and
    every space becomes "▁", also when the text already starts with a space, so the piece after
    ``<|image|>``, " ASSISTANT:", is read as "▁▁ASSISTANT:" (with legacy=True and False
    alike in 4.31). Today's `LlamaTokenizer` uses a Metaspace pre-tokenizer that does not
    prefix text starting with a space ("▁ASSISTANT:"): one token fewer. This puts back the
    normalizer of the sentencepiece-compatible fast LLaMA tokenizers (prepend "▁", spaces to
    "▁", no pre-tokenizer). Tokenizers without a Metaspace pre-tokenizer are left as they are.
    """
    from tokenizers import normalizers, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        return
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None


def level_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """First token of each word tokenized alone, after its BOS (Q-Align: ``ids[1]``)."""
    out = []
    for ids in tokenizer(list(words))["input_ids"]:
        ids = ids[1:] if ids and ids[0] == tokenizer.bos_token_id else ids
        out.append(int(ids[0]))
    return out


def pad_colour(image_mean) -> tuple[int, int, int]:
    """The square-padding colour: ``tuple(int(x * 255) for x in image_mean)``."""
    return tuple(int(x * 255) for x in image_mean)  # type: ignore[return-value]


class MPLUGOwl2Processor:
    """The tokenizer and the CLIP image processor of a checkpoint folder, used as released."""

    def __init__(self, tokenizer, image_processor) -> None:
        read_text_as_sentencepiece(tokenizer)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.pad_colour = pad_colour(image_processor.image_mean)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs) -> MPLUGOwl2Processor:
        """Tokenizer (AutoTokenizer) + CLIP image processor (PIL backend) of a folder or hub id."""
        from transformers import AutoTokenizer
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
        image_processor = CLIPImageProcessorPil.from_pretrained(str(source), **kwargs)
        return cls(tokenizer, image_processor)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the tokenizer files and ``preprocessor_config.json`` into `folder`."""
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        _name_processor_class(Path(folder) / "preprocessor_config.json")

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        """[B, 3, 448, 448] float32: each image squared with the mean colour, then processed."""
        squares = [expand2square(image, self.pad_colour) for image in images]
        return self.image_processor(squares, return_tensors="pt")["pixel_values"]

    def encode_prompts(self, prompts: list[str], pad_id: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] (right-padded) and their attention mask [B, L] for `prompts`."""
        rows = [tokenizer_image_token(prompt, self.tokenizer) for prompt in prompts]
        if pad_id is None:
            pad_id = self.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else pad_id  # LLaMA-2 has no pad token; id 0 is <unk>
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[index, : len(row)] = 1
        return ids, mask


def _name_processor_class(path: Path) -> None:
    """Record the released class name so the file reads like the hub's preprocessor config."""
    import json

    config = json.loads(path.read_text())
    config["image_processor_type"] = "CLIPImageProcessor"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
