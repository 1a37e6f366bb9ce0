"""A tiny random mPLUG-Owl2 folder (config.json, safetensors, tokenizer, image processor).

The `tiny` MLLM profile builds it once and loads it back through `load_mplug_owl2`, the code
the `full` profile uses for the hub checkpoint: same classes, same ``from_pretrained``, same
prompt/token/pixel handling, in seconds on a CPU. Architecture as released except widths:
ViT 2 layers x 32 wide at 28 px (2 x 2 patches + class token), abstractor 2 layers with the
released 64 queries (so 65 visual tokens per image, as in the 7B model), LLaMA 2 layers x 64
wide. The tokenizer is a ~300-token BPE with a LLaMA-like BOS and leading-space handling.
The text and visual branches of every multiway norm get different random weights, so the
routing is exercised. Its outputs mean nothing about images.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from agiqa_lib.core import distributed

TINY_VERSION = "mplug-owl2-tiny-v1"
IMAGE_SIZE = 28

_CORPUS = [
    "USER: Evaluate the input image to determine if its quality is compromised due to a "
    "lack of meaningful semantic content. ASSISTANT:",
    "USER: Evaluate if the image quality is compromised due to violations of coherence. "
    "ASSISTANT:",
    "USER: How would you rate the quality of this image? ASSISTANT: The quality of the "
    "image is excellent good fair poor bad.",
    "excellent good fair poor bad",
    "A sharp photo with natural colours; a blurry, noisy picture with broken shapes.",
]


def tiny_config(vocab_size: int, bos_id: int, eos_id: int):
    """The tiny `MPLUGOwl2Config` (released structure, small widths, 64 learned queries)."""
    from agiqa_lib.backbones.mplug_owl2.config import MPLUGOwl2Config

    visual = {
        "visual_model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 14,
                         "hidden_act": "quick_gelu", "layer_norm_eps": 1e-6},
        "visual_abstractor": {"hidden_size": 32, "num_hidden_layers": 2,
                              "num_attention_heads": 2, "intermediate_size": 48,
                              "encoder_hidden_size": 32, "num_learnable_queries": 64,
                              "grid_size": IMAGE_SIZE // 14, "layer_norm_eps": 1e-6},
    }
    return MPLUGOwl2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                           max_position_embeddings=512, rms_norm_eps=1e-5,
                           initializer_range=0.1, bos_token_id=bos_id, eos_token_id=eos_id,
                           pad_token_id=None, visual_config=visual)


def build_tiny_mplug_owl2(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny random model + tokenizer + image processor to `out_dir` (atomically).

    Returns `out_dir`; an existing folder with a config.json is reused. Deterministic in `seed`.
    """
    return distributed.write_model_folder_once(out_dir, lambda folder: _write_tiny(folder, seed))


def _write_tiny(folder: Path, seed: int) -> None:
    from agiqa_lib.backbones.mplug_owl2.model import MPLUGOwl2ForCausalLM
    from agiqa_lib.backbones.mplug_owl2.processing import MPLUGOwl2Processor

    processor = MPLUGOwl2Processor(_tiny_tokenizer(), _tiny_image_processor())
    tok = processor.tokenizer
    torch.manual_seed(seed)
    model = MPLUGOwl2ForCausalLM(tiny_config(len(tok), tok.bos_token_id, tok.eos_token_id))
    _separate_branches(model, seed)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)


def _separate_branches(model, seed: int) -> None:
    """Random per-branch RMSNorm weights (1 + 0.3 N(0, 1)): text and visual norms differ."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm.multiway" in name:
                noise = torch.randn(param.shape, generator=generator)
                param.copy_(1.0 + 0.3 * noise)


def _tiny_tokenizer():
    """A ~300-token BPE: LLaMA-like "▁" word starts, byte fallback, BOS added to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    alphabet = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=300 + len(alphabet),
                                  special_tokens=specials + alphabet,
                                  initial_alphabet=list("▁\n?.,;:"))
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    bos = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def _tiny_image_processor():
    """The CLIP image processor (PIL backend, OpenAI mean/std, bicubic) at 28 px."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                 crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
