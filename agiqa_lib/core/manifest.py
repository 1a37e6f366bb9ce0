"""The on-disk records of a feature store (`core.cache`): its manifest, rank fragments and shards.

- `store_identity`: the manifest's identity block (what the features depend on).
- `read_store_manifest`: a store's validated manifest, for readers outside `FeatureStore`.
- `manifest_problem` / `fragment_problem`: why a manifest or a rank's fragment is unusable.
- `shard_file_problem`: why a shard file is unusable (missing, partial, wrong shape, altered).
- `merge_fragments`: add the usable shards recorded in the fragments of a launched fill.
- `canonical_shard_bytes`: a shard's bytes, the same whichever process computes it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors_bytes

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import read_json, sha256_file

FORMAT_VERSION = 2  # 2: content-keyed inputs, info block, layout outside the identity
MANIFEST = "manifest.json"
FRAGMENTS = "manifest.rank*.json"  # one per rank of a launched fill, merged by rank 0


def store_identity(key_fields: dict[str, Any], files_hash: str, n: int,
                   dtype_name: str) -> dict[str, Any]:
    """The identity block of a store: the `CacheKey` fields (its `params` at the top level), the
    inputs' content hash, N, the storage dtype and the format version."""
    fields = dict(key_fields)
    params = fields.pop("params")
    fixed = {"format": FORMAT_VERSION, **fields, "files_hash": files_hash, "n": n,
             "dtype": dtype_name}
    if set(params) & set(fixed):
        raise ValueError(f"CacheKey.params may not redefine {sorted(set(params) & set(fixed))}")
    # one JSON round trip, so that tuples etc. compare equal to what the manifest holds
    return json.loads(json.dumps({**fixed, **params}))


def _is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and value >= minimum


def _shard_records_problem(shards: dict[str, Any]) -> str:
    """Which shard record lacks a file name, byte count or checksum, or ''."""
    for name, entry in shards.items():
        if not (re.fullmatch(r"[0-9]+", name) and isinstance(entry, dict)
                and isinstance(entry.get("file"), str) and _is_int(entry.get("bytes"))
                and isinstance(entry.get("sha256"), str)):
            return f"shard record {name!r} lacks a file name, byte count or checksum"
    return ""


def manifest_problem(manifest: Any) -> str:
    """What makes a manifest structurally unusable (hand-edited, another format), or ''."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {type(manifest).__name__}"
    for name in ("identity", "info", "shards"):
        if not isinstance(manifest.get(name), dict):
            return f"field {name!r} is missing or not an object"
    if not _is_int(manifest.get("shard_size"), 1):
        return "field 'shard_size' is missing or not a positive integer"
    if not isinstance(manifest.get("complete"), bool):
        return "field 'complete' is missing or not true/false"
    shape = manifest.get("item_shape", "missing")
    if shape is not None and not (isinstance(shape, list) and all(map(_is_int, shape))):
        return "field 'item_shape' is missing or not a list of integers"
    return _shard_records_problem(manifest["shards"])


def fragment_problem(fragment: Any, identity: dict[str, Any], shard_size: int) -> str:
    """Why a rank's manifest fragment cannot be merged into a manifest, or ''."""
    if not isinstance(fragment, dict) or not isinstance(fragment.get("shards"), dict):
        return "not a fragment"
    if fragment.get("identity") != identity:
        return "it describes other features"
    if fragment.get("shard_size") != shard_size:
        return f"shard size {fragment.get('shard_size')} differs from {shard_size}"
    shape = fragment.get("item_shape")
    if not (isinstance(shape, list) and all(map(_is_int, shape))):
        return "its item shape is missing"
    return _shard_records_problem(fragment["shards"])


def shard_file_problem(file: Path, entry: dict[str, Any], expected: list[int], dtype_name: str,
                       verify: bool) -> str:
    """Why the shard `file` that `entry` records cannot be used, or ''.

    Checks the name, the size, the header (features of shape `expected`, storage dtype
    `dtype_name`) and, with `verify`, the SHA-256.
    """
    if entry["file"] != file.name:
        return f"the manifest names file {entry['file']!r}, expected {file.name!r}"
    if not file.is_file():
        return "file missing"
    if file.stat().st_size != entry["bytes"]:
        return "file size differs from the manifest (partial or replaced file)"
    try:
        with safe_open(str(file), framework="pt") as f:
            tensor = f.get_slice("features")
            shape, dtype = list(tensor.get_shape()), tensor.get_dtype()
    except Exception as err:  # any header or format error means the file is unusable
        return f"unreadable ({err})"
    if shape != expected:
        return f"shape {shape} differs from the expected {expected}"
    if dtype != {"float32": "F32", "float16": "F16"}[dtype_name]:
        return f"dtype {dtype} differs from {dtype_name}"
    if verify and sha256_file(file) != entry["sha256"]:
        return "checksum differs from the manifest (corrupt or altered file)"
    return ""


def merge_fragments(manifest: dict[str, Any], fragments: Sequence[Path],
                    identity: dict[str, Any], shard_size: int,
                    shard_problem: Callable[[int, dict[str, Any], list[int]], str]
                    ) -> tuple[bool, list[str]]:
    """Add to `manifest` the shards of the fragment files it lacks and `shard_problem` accepts.

    Returns (whether any shard was added, why each skipped fragment or shard was skipped).
    """
    added, skipped = False, []
    for file in fragments:
        try:
            fragment = read_json(file)
            problem = fragment_problem(fragment, identity, shard_size)
        except (OSError, ValueError) as err:
            fragment, problem = None, f"unreadable: {err}"
        if problem:
            skipped.append(f"fragment {file.name} is ignored ({problem})")
            continue
        shape = manifest["item_shape"] if manifest["item_shape"] is not None \
            else fragment["item_shape"]
        for name, entry in fragment["shards"].items():
            if name in manifest["shards"]:
                continue
            problem = shard_problem(int(name), entry, shape)
            if problem:
                skipped.append(f"shard {name} of {file.name} is recomputed: {problem}")
                continue
            manifest["shards"][name] = entry
            manifest["item_shape"] = shape
            added = True
    return added, skipped


def canonical_shard_bytes(tensor: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The safetensors file of one shard, with its header's keys in a fixed order.

    safetensors writes the metadata map in the order of a per-process randomised hash map, so
    the same features written twice could differ in their header bytes (and checksum); sorting
    the keys makes a shard's bytes depend on its features only, whichever process wrote it.
    The format is unchanged (the header keeps its length and padding).
    """
    data = save_safetensors_bytes({"features": tensor}, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items())),
               **dict(sorted(header.items()))}
    text = json.dumps(ordered, separators=(",", ":")).encode()
    if len(text) > size:  # cannot happen (same characters); keep the library's bytes
        return data
    return data[:8] + text.ljust(size, b" ") + data[8 + size:]


def read_store_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of a store folder: identity, info, layout, shards, complete.

    Raises AgiqaError when it is missing, unreadable or malformed (extracting again rebuilds it).
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise AgiqaError(f"no feature-cache manifest at {path}; run the extraction first.")
    try:
        manifest = read_json(path)
        problem = manifest_problem(manifest)
    except (OSError, ValueError) as err:
        problem = f"unreadable: {err}"
    if problem:
        raise AgiqaError(f"feature-cache manifest {path} is malformed ({problem}); run the "
                         "extraction again to rebuild it.")
    return manifest
