"""Resumable on-disk store of per-item feature arrays: safetensors shards plus a JSON manifest.

One store holds the features of N items (images, image-question pairs, ...) computed by one
model and one preprocessing. It lives in `cache_dir()/features/<digest>/`, where the digest is
a hash of everything the features depend on (`CacheKey`, the file-list hash, N, storage dtype,
shard size). Items are grouped into shards of `shard_size` rows; every shard is written
atomically and then recorded in the manifest (also atomic), so a killed run loses at most the
shard in progress and the next run resumes at the first missing shard. Shards that are missing,
truncated, of the wrong shape or whose checksum does not match are recomputed, and a manifest
that describes other features is discarded; each of these is logged, never silently reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import atomic_path, read_json, sha256_file, write_json
from agiqa_lib.core.paths import cache_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CacheKey:
    """What cached features were computed from; changing any field selects another cache entry.

    `transform` is a text description of the preprocessing (see `features.describe_transform`);
    `view` names the view ("test" for the fixed evaluation transform, "aug3" for the fourth
    augmented view) and `seed` the base seed of a random view's per-image randomness.
    """

    dataset: str
    model_id: str
    profile: str
    transform: str
    view: str = "test"
    seed: int | None = None


def file_list_hash(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the ordered list of (path relative to the files' common folder, size).

    Relative names make a moved or copied dataset reuse its cache; sizes catch replaced files.
    Modification times are left out on purpose: copying a dataset changes them but not the
    content. A file that does not exist raises AgiqaError naming it.
    """
    if not paths:
        raise AgiqaError("no files given to the feature cache: the dataset has no images.")
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute])
    digest = hashlib.sha256()
    for path in absolute:
        try:
            size = os.stat(path).st_size
        except OSError:
            raise AgiqaError(f"image file not found or unreadable: {path}; check the dataset "
                             "root or regenerate the dataset.") from None
        digest.update(f"{os.path.relpath(path, common)}\t{size}\n".encode())
    return digest.hexdigest()



class CorruptCacheError(AgiqaError):
    """A shard failed its checksum while loading; it has been dropped and must be recomputed."""


class FeatureStore:
    """One cache entry: `n` rows of features, stored as shards of `shard_size` rows.

    Works for any per-item computation (images, image-question pairs, ...): inside
    `with store.writing():`, call `store.write_shard(i, f(store.shard_rows(i)))` for each
    `i in store.missing_shards()`; then `store.load()`. `files_hash` identifies the inputs
    (see `file_list_hash`); `root` replaces the default folder `cache_dir()/features`.
    """

    def __init__(self, key: CacheKey, n: int, files_hash: str, dtype: torch.dtype = torch.float32,
                 shard_size: int = 512, root: str | os.PathLike | None = None) -> None:
        if n < 1:
            raise AgiqaError(f"a feature cache needs at least one item, got n={n}.")
        if shard_size < 1:
            raise AgiqaError(f"shard_size must be a positive integer, got {shard_size}.")
        dtype_name = {v: k for k, v in _DTYPES.items()}.get(dtype)
        if dtype_name is None:
            raise AgiqaError(f"feature storage dtype must be float32 or float16, got {dtype}.")
        self.key = key
        self.n = n
        self.dtype = dtype
        self.shard_size = shard_size
        self.identity: dict[str, Any] = {
            "format": FORMAT_VERSION, **asdict(key), "files_hash": files_hash, "n": n,
            "dtype": dtype_name, "shard_size": shard_size,
        }
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        self.path = Path(root) if root is not None else cache_dir() / "features"
        self.path = self.path / digest[:24]
        self.num_shards = -(-n // shard_size)
        self._manifest = self._read_valid_manifest()

    # --- layout -------------------------------------------------------------------------------
    def shard_rows(self, index: int) -> range:
        """Item indices covered by shard `index`."""
        return range(index * self.shard_size, min(self.n, (index + 1) * self.shard_size))

    def missing_shards(self) -> list[int]:
        """Indices of the shards still to compute, in order (a resumed run starts at the first)."""
        done = self._manifest["shards"]
        return [i for i in range(self.num_shards) if str(i) not in done]

    @property
    def complete(self) -> bool:
        """True when every shard is present in the manifest."""
        return self._manifest["complete"]

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """Shape of one item's features, known once a shard has been written."""
        shape = self._manifest["item_shape"]
        return None if shape is None else tuple(shape)

    # --- manifest -----------------------------------------------------------------------------
    def _fresh_manifest(self) -> dict[str, Any]:
        return {"identity": self.identity, "item_shape": None, "shards": {}, "complete": False}

    def _reset(self, reason: str, on_disk: bool) -> dict[str, Any]:
        """Forget every shard of this entry; with `on_disk` (lock held) also delete the files."""
        manifest = self._fresh_manifest()
        if on_disk:
            log.warning("feature cache %s is rebuilt: %s", self.path, reason)
            for stale in self.path.glob("shard_*.safetensors"):
                stale.unlink()
            write_json(self.path / MANIFEST, manifest)
        return manifest

    def _read_valid_manifest(self, fix: bool = False) -> dict[str, Any]:
        """Read the manifest, dropping whatever does not match the requested features.

        Without `fix` nothing on disk changes; with it (lock held) the reasons are logged and
        a mismatching entry's files are deleted.
        """
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            return self._fresh_manifest()
        try:
            manifest = read_json(manifest_path)
            recorded = manifest["identity"]
            shards = manifest["shards"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return self._reset(f"manifest unreadable ({err})", fix)
        if recorded != self.identity:
            changed = sorted(k for k in set(recorded) | set(self.identity)
                             if recorded.get(k) != self.identity.get(k))
            return self._reset(f"manifest describes other features (differs in {changed})",
                               fix)
        item_shape = manifest.get("item_shape")
        kept = {}
        for name, entry in shards.items():
            problem = self._shard_problem(int(name), entry, item_shape)
            if problem and fix:
                log.warning("feature cache %s: shard %s is recomputed: %s", self.path, name,
                            problem)
            if not problem:
                kept[name] = entry
        manifest["shards"] = kept
        manifest["complete"] = len(kept) == self.num_shards
        if not kept:
            manifest["item_shape"] = None
        return manifest

    def _shard_problem(self, index: int, entry: dict[str, Any],
                       item_shape: list[int] | None) -> str:
        """Why a recorded shard cannot be used (cheap checks: file, size, header), or ''."""
        if not 0 <= index < self.num_shards:
            return "not part of this cache's layout"
        if item_shape is None:
            return "the manifest records no item shape"
        file = self.path / entry.get("file", "")
        if not file.is_file():
            return "file missing"
        if file.stat().st_size != entry.get("bytes"):
            return "file size differs from the manifest (partial or replaced file)"
        rows = self.shard_rows(index)
        try:
            with safe_open(str(file), framework="pt") as f:
                tensor = f.get_slice("features")
                shape, dtype = list(tensor.get_shape()), tensor.get_dtype()
        except Exception as err:  # any header or format error means the file is unusable
            return f"unreadable ({err})"
        expected = [len(rows), *item_shape]
        if shape != expected:
            return f"shape {shape} differs from the expected {expected}"
        if dtype != {"float32": "F32", "float16": "F16"}[self.identity["dtype"]]:
            return f"dtype {dtype} differs from {self.identity['dtype']}"
        return ""

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[FeatureStore]:
        """Hold this entry's lock while computing shards; re-reads the manifest once locked.

        A second process filling the same entry waits here, then finds the shards done.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("waiting for another process writing the feature cache %s", self.path)
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for leftover in self.path.glob(".*.tmp"):  # from a killed run; we hold the lock
                    leftover.unlink()
                self._manifest = self._read_valid_manifest(fix=True)
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write_shard(self, index: int, features: torch.Tensor) -> None:
        """Store the features of shard `index` ([rows, *item_shape]) atomically, then record it."""
        rows = self.shard_rows(index)
        if features.shape[0] != len(rows):
            raise ValueError(f"shard {index} needs {len(rows)} rows, got {features.shape[0]}")
        item_shape = list(features.shape[1:])
        recorded = self._manifest["item_shape"]
        if recorded is not None and recorded != item_shape:
            self._manifest = self._reset(
                f"the encoder now gives items of shape {item_shape}, the cache holds {recorded}",
                on_disk=True)
        self._manifest["item_shape"] = item_shape
        file = self.path / f"shard_{index:05d}.safetensors"
        tensor = features.detach().to("cpu", self.dtype).contiguous()
        meta = {"start": str(rows.start), "stop": str(rows.stop)}
        with atomic_path(file) as tmp:
            save_file({"features": tensor}, str(tmp), metadata=meta)
            entry = {"file": file.name, "start": rows.start, "stop": rows.stop,
                     "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
        self._manifest["shards"][str(index)] = entry
        self._manifest["complete"] = len(self._manifest["shards"]) == self.num_shards
        write_json(self.path / MANIFEST, self._manifest)

    # --- reading ------------------------------------------------------------------------------
    def load(self) -> torch.Tensor:
        """All features as one tensor [n, *item_shape] in the storage dtype (checksums verified).

        A shard whose checksum fails is dropped from the manifest and CorruptCacheError raised;
        filling the store again recomputes it.
        """
        if not self.complete:
            raise AgiqaError(f"feature cache {self.path} is incomplete "
                             f"({len(self.missing_shards())} of {self.num_shards} shards missing); "
                             "run the extraction again to finish it.")
        out = torch.empty((self.n, *self.item_shape), dtype=self.dtype)
        for index in range(self.num_shards):
            entry = self._manifest["shards"][str(index)]
            data = (self.path / entry["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                with self.writing():
                    self._manifest["shards"].pop(str(index), None)
                    self._manifest["complete"] = False
                    write_json(self.path / MANIFEST, self._manifest)
                raise CorruptCacheError(f"shard {entry['file']} of feature cache {self.path} "
                                        "failed its checksum; it was dropped, extract again "
                                        "to recompute it.")
            rows = self.shard_rows(index)
            out[rows.start:rows.stop] = load_safetensors_bytes(data)["features"]
        return out
