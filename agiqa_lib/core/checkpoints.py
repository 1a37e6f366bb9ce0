"""Safetensors checkpoints with metadata: the one place that writes and reads them.

Every checkpoint records `agiqa_version`, the library version that wrote it, so that a file
from another version can be named as such when it no longer fits (files written before the key
existed still load; messages call them "an older version"). Tensors are checked to be finite
when written and when read, so a diverged run never becomes a checkpoint that scores NaN. A
pickled PyTorch file (`torch.save`) is recognised by its first bytes and refused without being
opened: unpickling can run arbitrary code. Configs stored as JSON are rebuilt by
`config_from_json`, which names unknown or missing keys instead of raising a TypeError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors import safe_open

from agiqa_lib import __version__
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.tensor_io import load_tensors, save_tensors

VERSION_KEY = "agiqa_version"
ZIP_MAGIC = b"PK\x03\x04"       # torch.save since PyTorch 1.6 writes a zip archive
PICKLE_PROTOCOLS = range(2, 6)  # legacy torch.save: a bare pickle, b"\x80" + protocol byte

T = TypeVar("T")
_REQUIRED: Any = object()


def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str]) -> Path:
    """Save `tensors` with `metadata` (+ `agiqa_version`) as safetensors, atomically.

    A tensor holding NaN or inf is refused (AgiqaError naming it): such a checkpoint could only
    give NaN scores later. Tensors must not share storage (clone them first).
    """
    bad = _first_non_finite(tensors)
    if bad is not None:
        name, count, total = bad
        raise AgiqaError(f"refusing to write checkpoint {path}: tensor '{name}' holds {count} "
                         f"NaN/inf value(s) of {total}, so the run diverged; retrain with a "
                         "lower learning rate or check the inputs for NaN")
    save_tensors(path, dict(tensors), metadata={**metadata, VERSION_KEY: __version__})
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata block of a safetensors checkpoint (no tensors are read).

    A missing path, a folder, an empty file, a pickled PyTorch file or any other unreadable
    file is an AgiqaError saying which and what to pass instead.
    """
    path = Path(path)
    if path.is_dir():
        raise AgiqaError(f"checkpoint {path} is a folder; pass the .safetensors file inside it")
    if not path.is_file():
        raise AgiqaError(f"checkpoint {path} not found; pass a .safetensors file written by this "
                         "library (notebook 02 or 04, agiqa train-clip or train-ma)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise AgiqaError(_unreadable(path, err)) from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, metadata) of a checkpoint; every tensor must be finite.

    The first tensor holding NaN or inf is named in an AgiqaError, with the version that wrote
    the file.
    """
    metadata = read_metadata(path)
    try:
        tensors = load_tensors(path)
    except Exception as err:  # a header that reads but data that does not (truncated file)
        raise AgiqaError(_unreadable(Path(path), err)) from None
    bad = _first_non_finite(tensors)
    if bad is not None:
        name, count, total = bad
        raise AgiqaError(f"{_source(path, metadata)} holds NaN/inf in tensor '{name}' ({count} of "
                         f"{total} values), so it cannot give valid scores; retrain (e.g. with a "
                         "lower learning rate) or use an earlier checkpoint")
    return tensors, metadata


def written_by(metadata: Mapping[str, str]) -> str:
    """Which library version wrote a checkpoint, for messages ("agiqa 0.1.0" or older)."""
    version = metadata.get(VERSION_KEY)
    return f"agiqa {version}" if version else "an older version of agiqa (no agiqa_version key)"


def parse_json_field(metadata: Mapping[str, str], key: str, path: str | os.PathLike,
                     default: Any = _REQUIRED) -> Any:
    """The JSON value stored under metadata `key`; `default` when absent (else an AgiqaError).

    Bad JSON is an AgiqaError naming the checkpoint, the key and the version that wrote it.
    """
    if key not in metadata:
        if default is not _REQUIRED:
            return default
        raise AgiqaError(f"{_source(path, metadata)} has no metadata key '{key}' (found "
                         f"{sorted(metadata)}); it was not written by this library's "
                         f"save_checkpoint, so re-save it with agiqa {__version__}")
    return _loads(metadata[key], key, path, metadata)


def config_from_json(cls: type[T], value: str | Mapping[str, Any],
                     path: str | os.PathLike | None = None,
                     metadata: Mapping[str, str] | None = None, key: str = "config") -> T:
    """Rebuild dataclass `cls` from its JSON text or dict (as `dataclasses.asdict` wrote it).

    Nested dataclass fields (also `X | None`) are rebuilt recursively and JSON lists become
    tuples where the field is a tuple. A key `cls` does not have, or a missing field without a
    default, is an AgiqaError naming the checkpoint `path`, the key, the version that wrote it
    and the keys this version knows; a field with a default that the file lacks (written before
    the field existed) takes the default.
    """
    metadata = metadata or {}
    raw = _loads(value, key, path, metadata) if isinstance(value, str) else value
    return _build(cls, raw, key, path, metadata)


def _build(cls: type[T], raw: Any, key: str, path: str | os.PathLike | None,
           metadata: Mapping[str, str]) -> T:
    """`cls(**raw)` after checking the keys and converting nested values (see config_from_json)."""
    source = _source(path, metadata)
    if not isinstance(raw, Mapping):
        raise AgiqaError(f"'{key}' of {source} should be a JSON object of {cls.__name__} fields "
                         f"but is a {type(raw).__name__}; re-save it with agiqa {__version__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known = sorted(fields)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise AgiqaError(f"{source} has unknown {cls.__name__} key(s) {unknown} in '{key}'; agiqa "
                         f"{__version__} knows {known}, so load it with the version that wrote it "
                         "or re-save it")
    missing = [name for name, f in fields.items() if name not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise AgiqaError(f"{source} lacks {cls.__name__} key(s) {missing} in '{key}'; agiqa "
                         f"{__version__} needs {known}, so load it with the version that wrote it "
                         "or re-save it")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], item, f"{key}.{name}", path, metadata)
              for name, item in raw.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AgiqaError) as err:
        raise AgiqaError(f"'{key}' of {source} holds a value agiqa {__version__} cannot use "
                         f"({err}); re-save it with this version") from None


def _convert(hint: Any, value: Any, key: str, path: str | os.PathLike | None,
             metadata: Mapping[str, str]) -> Any:
    """A JSON value as field type `hint` wants it: nested dataclass or tuple; else unchanged."""
    options = (typing.get_args(hint)
               if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,))
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return _build(option, value, key, path, metadata)
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value


def _loads(text: str, key: str, path: str | os.PathLike | None,
           metadata: Mapping[str, str]) -> Any:
    """json.loads with an AgiqaError naming the checkpoint, the key and the writing version."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AgiqaError(f"metadata key '{key}' of {_source(path, metadata)} is not valid JSON "
                         f"({err.msg} at line {err.lineno} column {err.colno}); the file was "
                         f"edited or damaged, so re-save it with agiqa {__version__}") from None


def _source(path: str | os.PathLike | None, metadata: Mapping[str, str]) -> str:
    """'checkpoint X (written by agiqa V)' for messages; 'the config JSON' without a path."""
    if path is None:
        return "the config JSON"
    return f"checkpoint {path} (written by {written_by(metadata)})"


def _unreadable(path: Path, err: Exception) -> str:
    """Why a file is not a readable safetensors checkpoint, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return (f"checkpoint {path} is empty (0 bytes), probably cut short by a killed run; "
                "re-save it")
    if head == ZIP_MAGIC or (len(head) > 1 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS):
        return (f"checkpoint {path}: this is a pickled PyTorch file, not safetensors; it is not "
                "opened for safety (unpickling can run arbitrary code), so pass a .safetensors "
                "checkpoint written by this library")
    return (f"checkpoint {path} is not a readable safetensors file ({err}); it may be truncated "
            "or of another format, so re-save it with this library")


def _first_non_finite(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int, int] | None:
    """(name, count of NaN/inf values, size) of the first floating tensor that is not finite."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                return name, int((~finite).sum()), tensor.numel()
    return None
