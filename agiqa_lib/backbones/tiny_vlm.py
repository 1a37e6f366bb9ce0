"""A tiny random LLaVA (tokenizer, processor, model) saved to a folder, for tests.

The `tiny` MLLM profile builds this folder once and loads it back through the same
`AutoProcessor` / `AutoModelForImageTextToText` code as the `full` profile, so the real
loading, chat-template, batching and pooling code runs offline in seconds. Its weights are
random (seeded): its vectors mean nothing about image quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from agiqa_lib.core import distributed

TINY_VLM_VERSION = "llava-tiny-v1"

# The chat template of llava-hf/llava-1.5-7b-hf: it renders every image before the text,
# whatever the order of the content list (the MLLM code handles that, see mllm.py).
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{{ '\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_TOKENIZER_CORPUS = [
    "Evaluate the input image to determine if its quality is compromised due to a lack of "
    "meaningful semantic content.",
    "Evaluate if the image quality is compromised due to violations of coherence.",
    "USER: describe the image. ASSISTANT: a red circle left of a blue square.",
    "The photo is sharp, the colours are natural and the objects are complete.",
    "A blurry, noisy picture with broken shapes and missing parts.",
]


def build_tiny_vlm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random LLaVA model + processor to `out_dir` (atomically) and return it.

    ~150k parameters: CLIP vision tower 32 px / patch 8 (16 image tokens), 2-layer LLaMA of
    width 64, a ~300-token byte-level BPE tokenizer. Deterministic for a given `seed`.
    """
    return distributed.write_model_folder_once(out_dir,
                                               lambda folder: _write_tiny_vlm(folder, seed))


def _write_tiny_vlm(folder: Path, seed: int) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    processor = _tiny_processor()
    tokenizer = processor.tokenizer
    config = LlavaConfig(
        vision_config=_tiny_vision_config(),
        text_config=_tiny_text_config(vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _tiny_processor():
    """LLaVA processor: CLIP image processor at 32 px + a freshly trained small BPE tokenizer."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=image_processor, tokenizer=_tiny_tokenizer(),
                          patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_15_CHAT_TEMPLATE)


def _tiny_tokenizer():
    """A ~300-token byte-level BPE trained on a few sentences, with LLaVA's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"})


def _tiny_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, image_size=32, patch_size=8,
                            projection_dim=32)


def _tiny_text_config(vocab_size: int, pad_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=256, pad_token_id=pad_id)
