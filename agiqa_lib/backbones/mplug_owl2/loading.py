"""Load an mPLUG-Owl2 checkpoint (hub id or local folder) with one clear error when absent.

A checkpoint is the hub's layout: ``config.json`` (``model_type: mplug_owl2``), the weight
shards (``*.safetensors`` or ``pytorch_model-*.bin`` + index), the LLaMA tokenizer files and
``preprocessor_config.json``. `load_mplug_owl2` reads it with `MPLUGOwl2ForCausalLM
.from_pretrained` (no ``trust_remote_code``, no conversion), in fp16/bf16/fp32, or in 8-/4-bit
through bitsandbytes on a CUDA device (as the release's ``builder.py:33-44``: 4-bit is NF4
with double quantization and fp16 compute).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from agiqa_lib.core.errors import AgiqaError

MPLUG_OWL2_MODEL_ID = "MAGAer13/mplug-owl2-llama2-7b"  # MA-AGIQA's configs/AGIQA_3k/MA_AGIQA.yaml
QALIGN_MODEL_ID = "q-future/one-align"
KNOWN_MODEL_IDS = (MPLUG_OWL2_MODEL_ID, QALIGN_MODEL_ID, "q-future/q-align-koniq-spaq-v0",
                   "q-future/q-align-quality")
QUANTIZATIONS = (None, "8bit", "4bit")


def local_folder(source: str | os.PathLike) -> Path | None:
    """`source` as a folder path when it looks like one (exists, or starts with . / ~) else None."""
    text = str(source)
    path = Path(text).expanduser()
    return path if text.startswith((".", "/", "~")) or path.exists() else None


def model_type_of(source: str | os.PathLike) -> str | None:
    """``model_type`` in config.json of a folder or of a hub id's cached files (None if unknown).

    Reads local files only: offline it never reaches the network, and a hub model that was
    never downloaded is unknown (then the caller decides from the id).
    """
    folder = local_folder(source)
    if folder is not None:
        path = folder / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(source), "config.json")
        path = Path(cached) if isinstance(cached, str) else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def is_mplug_owl2(source: str | os.PathLike) -> bool:
    """Whether `source` is an mPLUG-Owl2 checkpoint (config model_type, else a known hub id)."""
    from agiqa_lib.backbones.mplug_owl2.config import MODEL_TYPE

    kind = model_type_of(source)
    if kind is not None:
        return kind == MODEL_TYPE
    name = str(source).lower()
    return local_folder(source) is None and (
        name in {i.lower() for i in KNOWN_MODEL_IDS} or "mplug-owl2" in name
        or "mplug_owl2" in name)


def stable_model_id(source: str | os.PathLike) -> str:
    """Identity recorded in caches and results: ``local:<abs path>`` or ``hf:<hub id>``."""
    folder = local_folder(source)
    return f"local:{folder.resolve()}" if folder is not None else f"hf:{source}"


def quantization_config(quantization: str | None, device: str, dtype: torch.dtype):
    """The `BitsAndBytesConfig` of ``"8bit"`` / ``"4bit"`` (None for no quantization)."""
    if quantization not in QUANTIZATIONS:
        raise AgiqaError(f"unknown quantization {quantization!r}; choose 8bit, 4bit or None")
    if quantization is None:
        return None
    missing = [name for name in ("bitsandbytes", "accelerate")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise AgiqaError(f"{quantization} loading needs the packages {' and '.join(missing)}: "
                         f"run `pip install {' '.join(missing)}` (CUDA only), or drop "
                         "quantization to load in fp16")
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise AgiqaError(f"{quantization} loading (bitsandbytes) needs a CUDA device; pass "
                         "device='cuda' on a GPU machine, or drop quantization")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")


def load_mplug_owl2(source: str | os.PathLike = MPLUG_OWL2_MODEL_ID, *, device: str = "cpu",
                    dtype: torch.dtype | None = None, quantization: str | None = None,
                    attn_implementation: str | None = None):
    """(model, processor) of an mPLUG-Owl2 checkpoint: hub id or local folder, eval mode.

    `dtype` defaults to fp16 on CUDA (as getFeature.py), fp32 on CPU. The LLM's attention
    defaults to ``"eager"`` (as released); ``attn_implementation="sdpa"`` is the faster option.
    Offline without the files, or a folder without config.json, raises one AgiqaError.
    """
    from agiqa_lib.backbones.mplug_owl2.model import MPLUGOwl2ForCausalLM
    from agiqa_lib.backbones.mplug_owl2.processing import MPLUGOwl2Processor
    from agiqa_lib.backbones.weights import missing_full_weights

    folder = local_folder(source)
    if folder is not None and not (folder / "config.json").is_file():
        raise AgiqaError(f"mPLUG-Owl2 folder {folder} has no config.json; pass a folder holding "
                         f"the hub files of {MPLUG_OWL2_MODEL_ID} (config.json, weights, "
                         "tokenizer, preprocessor_config.json) or the hub id")
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    kwargs = {"dtype": dtype}
    quant = quantization_config(quantization, device, dtype)
    if quant is not None or (str(device) != "cpu" and importlib.util.find_spec("accelerate")):
        kwargs["device_map"] = {"": str(device)}  # load straight onto the device
    if quant is not None:
        kwargs["quantization_config"] = quant
    # eager = the release's explicit softmax(QK^T / sqrt(d)) in float32 (modeling_llama2.py:129-146)
    kwargs["attn_implementation"] = attn_implementation or "eager"
    path = str(folder) if folder is not None else str(source)
    try:
        try:
            processor = MPLUGOwl2Processor.from_pretrained(path)
        except (ValueError, ImportError) as err:  # e.g. tokenizer.model without sentencepiece
            raise AgiqaError(f"cannot read the tokenizer or image processor of {str(source)!r} "
                             f"({err}); `pip install sentencepiece protobuf` lets transformers "
                             "read a LLaMA tokenizer.model") from None
        model = MPLUGOwl2ForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise missing_full_weights(
            f"the mPLUG-Owl2 checkpoint {str(source)!r} ({type(err).__name__} while loading it)",
            f"run `hf download {source}` (about 16 GB)",
            "pass model_id=<local folder holding its config.json, weights, tokenizer and "
            "preprocessor_config.json>") from None
    check_tokenizer(processor.tokenizer, model.config.vocab_size, source)
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval().requires_grad_(False), processor


def check_tokenizer(tokenizer, vocab_size: int, source: str | os.PathLike) -> None:
    """Refuse a tokenizer that cannot fit the model: ids beyond the embedding, far fewer tokens
    than the model has (e.g. a LLaMA ``tokenizer.model`` read without sentencepiece, which
    transformers then tries other readers on), or no BOS (the prompts start with it)."""
    size = len(tokenizer)
    if size > vocab_size or size < 0.9 * vocab_size or tokenizer.bos_token_id is None:
        missing = [name for name in ("sentencepiece", "google.protobuf") if not _installed(name)]
        hint = (f"install {' and '.join(missing)} (`pip install sentencepiece protobuf`), so "
                "transformers can read the LLaMA tokenizer.model" if missing else
                "check the tokenizer files of the checkpoint")
        raise AgiqaError(f"the tokenizer of {str(source)!r} has {size} tokens (BOS "
                         f"{tokenizer.bos_token_id}) but the model has {vocab_size} and needs "
                         f"a BOS token: {hint}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is absent
        return False
