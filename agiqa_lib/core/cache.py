"""Resumable on-disk store of per-item feature arrays: safetensors shards plus a JSON manifest.

One store holds the features of N items computed by one model and one preprocessing; CLIP
views, IQA-backbone tokens and MA-AGIQA semantic vectors all use it. It lives in
`<root>/<slug>-<digest>/` (root: `cache_dir()/features` unless given; the slug names profile,
model and view for humans), where the digest hashes the store's identity: everything the
features depend on (`CacheKey`, the content hash of the input files, N, storage dtype). The
manifest also keeps a free-form `info` block (notes, dataset name, extraction speed) that is not
part of the identity, and the layout (`shard_size`), which is not either: an existing store keeps
the layout it was created with.

Every shard is written atomically and then recorded in the manifest (also atomic), so a killed
run loses at most the shard in progress and the next run resumes at the first missing shard.
Unusable shards are recomputed, and a manifest that describes other features or is unusable is
discarded with its shards (the checks: `core.manifest`); each is logged, never reused.
`load()` always verifies checksums; `writing(verify=True)` does before deciding what is left
to compute. Inputs are identified by content (`core.content_key.file_list_hash`).

Several processes of one launched run (`core.distributed`) fill an entry together through
`sharded_writing()`: rank 0 takes the entry's lock on behalf of the group (another job filling
the same entry still waits), cleans and verifies the manifest, and after a barrier every rank
computes the missing shards i with i % world == rank, in order. A rank records each finished
shard in its own manifest fragment (`manifest.rank<r>.json`, atomic), so ranks never wait for
each other; after a second barrier rank 0 merges the fragments into the manifest (each entry
checked like any recorded shard) and deletes them. A killed rank's fragment survives: whoever
opens the entry next (a launched or a single-process run) merges the shards it finished, so
only missing shards are computed again. Shard files are the same bytes whoever computes them
(batches never straddle shards; `core.manifest.canonical_shard_bytes`), so a launched
extraction gives the single-process cache byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes

from agiqa_lib.core import distributed
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import atomic_path, exclusive_lock, read_json, sha256_file, write_json
from agiqa_lib.core.manifest import (FRAGMENTS, MANIFEST, canonical_shard_bytes, manifest_problem,
                                     merge_fragments, shard_file_problem, store_identity)
from agiqa_lib.core.paths import cache_dir

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CacheKey:
    """What cached features were computed from; changing any field selects another cache entry.

    `transform` is a text description of the preprocessing (see `features.describe_transform`);
    `view` names the view ("test" for the fixed evaluation transform, "aug3" for the fourth
    augmented view) and `seed` the base seed of a random view's per-image randomness. `dataset`
    may be None for features that depend on the files' bytes only. `params` holds any further
    JSON-serialisable identity fields (e.g. the questions asked of an MLLM); they appear at the
    top level of the manifest's identity.
    """

    dataset: str | None
    model_id: str
    profile: str
    transform: str
    view: str = "test"
    seed: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)


class CorruptCacheError(AgiqaError):
    """Shards failed their checksum while loading; they have been dropped and must be recomputed."""


class FeatureStore:
    """One cache entry: `n` rows of features, stored as shards of `shard_size` rows.

    Works for any per-item computation: inside `with store.writing():`, call
    `store.write_shard(i, f(store.shard_rows(i)))` for each `i in store.missing_shards()` (or
    `store.write_all(array)`), optionally `store.update_info({...})`; then `store.load()`.
    `files_hash` identifies the inputs (see `file_list_hash`); `root` replaces the default
    folder `cache_dir()/features`. `shard_size` applies when the store is created.
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
        self.identity = store_identity(asdict(key), files_hash, n, dtype_name)
        self.key, self.n, self.dtype = key, n, dtype
        self._requested_shard_size = shard_size
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{key.profile}-{key.model_id}-{key.view}")
        root = Path(root) if root is not None else cache_dir() / "features"
        self.path = root / f"{slug.strip('-')[:60]}-{digest[:24]}"
        self._fragment: dict[str, Any] | None = None  # set inside a launched sharded_writing
        self._manifest = self._read_valid_manifest()

    # --- layout -------------------------------------------------------------------------------
    def _set_layout(self, shard_size: int) -> None:
        self.shard_size = shard_size
        self.num_shards = -(-self.n // shard_size)

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

    @property
    def info(self) -> dict[str, Any]:
        """The manifest's free-form description block (not part of the identity)."""
        return dict(self._manifest["info"])

    # --- manifest -----------------------------------------------------------------------------
    def _fresh_manifest(self, shard_size: int | None = None) -> dict[str, Any]:
        self._set_layout(shard_size or self._requested_shard_size)
        return {"identity": self.identity, "shard_size": self.shard_size, "item_shape": None,
                "shards": {}, "complete": False, "info": {}}

    def _reset(self, reason: str, on_disk: bool, shard_size: int | None = None) -> dict[str, Any]:
        """Forget every shard of this entry; with `on_disk` (lock held) also delete the files.

        The layout goes back to the requested one unless `shard_size` keeps another.
        """
        manifest = self._fresh_manifest(shard_size)
        if on_disk:
            log.warning("feature cache %s is rebuilt: %s", self.path, reason)
            for pattern in ("shard_*.safetensors", FRAGMENTS):
                for stale in self.path.glob(pattern):
                    stale.unlink()
            write_json(self.path / MANIFEST, manifest)
        return manifest

    def _read_valid_manifest(self, fix: bool = False, verify: bool = False) -> dict[str, Any]:
        """Read the manifest, dropping whatever does not match the requested features.

        Without `fix` nothing on disk changes; with it (lock held) the reasons are logged, a
        mismatching entry's files are deleted and dropped shards leave the manifest. `verify`
        also compares every shard's SHA-256 with the manifest. Shards recorded in the manifest
        fragments of a launched fill are merged (with `fix`, into the file, and the fragments
        deleted).
        """
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            manifest = self._fresh_manifest()
            return self._merge_fragments(manifest, fix, verify, changed=False)
        try:
            manifest = read_json(manifest_path)
        except (OSError, ValueError) as err:
            return self._reset(f"manifest unreadable ({err})", fix)
        problem = manifest_problem(manifest)
        if problem:
            return self._reset(f"manifest malformed: {problem}", fix)
        recorded = manifest["identity"]
        if recorded != self.identity:
            changed = sorted(k for k in set(recorded) | set(self.identity)
                             if recorded.get(k) != self.identity.get(k))
            return self._reset(f"manifest describes other features (differs in {changed})",
                               fix)
        self._set_layout(manifest["shard_size"])
        kept = {}
        for name, entry in manifest["shards"].items():
            problem = self._shard_problem(int(name), entry, manifest["item_shape"], verify)
            if problem and fix:
                log.warning("feature cache %s: shard %s is recomputed: %s", self.path, name,
                            problem)
            if not problem:
                kept[name] = entry
        dropped = len(kept) != len(manifest["shards"])
        manifest["shards"] = kept
        manifest["complete"] = len(kept) == self.num_shards
        if not kept:
            manifest["item_shape"] = None
        return self._merge_fragments(manifest, fix, verify, changed=dropped)

    def _merge_fragments(self, manifest: dict[str, Any], fix: bool, verify: bool,
                         changed: bool) -> dict[str, Any]:
        """Add the usable shards of the rank fragments to `manifest`; with `fix` write it (when
        anything `changed`) and delete the fragments."""
        fragments = sorted(self.path.glob(FRAGMENTS)) if self.path.is_dir() else []
        added, skipped = merge_fragments(
            manifest, fragments, self.identity, self.shard_size,
            lambda index, entry, shape: self._shard_problem(index, entry, shape, verify))
        manifest["complete"] = len(manifest["shards"]) == self.num_shards
        if fix:
            for reason in skipped:
                log.warning("feature cache %s: %s", self.path, reason)
            if changed or added:
                write_json(self.path / MANIFEST, manifest)
            for file in fragments:
                file.unlink(missing_ok=True)
        return manifest

    def _shard_file(self, index: int) -> Path:
        return self.path / f"shard_{index:05d}.safetensors"

    def _shard_problem(self, index: int, entry: dict[str, Any], item_shape: list[int] | None,
                       verify: bool) -> str:
        """Why a recorded shard cannot be used (file, size, header; checksum if `verify`), or ''."""
        if not 0 <= index < self.num_shards:
            return "not part of this cache's layout"
        if item_shape is None:
            return "the manifest records no item shape"
        return shard_file_problem(self._shard_file(index), entry,
                                  [len(self.shard_rows(index)), *item_shape],
                                  self.identity["dtype"], verify)

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def writing(self, verify: bool = False) -> Iterator[FeatureStore]:
        """Hold this entry's lock while computing shards; re-reads the manifest once locked.

        A second process filling the same entry waits here, then finds the shards done. With
        `verify`, shards whose checksum fails are dropped (logged) and so computed again.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path / "lock",
                        f"waiting for another process writing the feature cache {self.path}"):
            for leftover in self.path.glob(".*.tmp"):  # from a killed run; we hold the lock
                leftover.unlink()
            self._manifest = self._read_valid_manifest(fix=True, verify=verify)
            yield self

    @contextmanager
    def sharded_writing(self, verify: bool = False) -> Iterator[list[int]]:
        """Yield the shards this process computes (call `write_shard` for each, in any order).

        One process: `writing(verify)` and every missing shard. In a launched run (collective:
        every rank enters it; see the module docstring) rank i of W gets the missing shards
        s with s % W == i; `write_shard` records into this rank's fragment and `update_info`
        is kept from rank 0 only; rank 0 merges when every rank has left the block, and every
        rank then sees the merged manifest. On an error the block is left without the final
        barrier (the launcher stops the other ranks); finished shards stay recorded in the
        fragments and are merged by the next run.
        """
        group = distributed.current()
        if not group.distributed:
            with self.writing(verify=verify):
                yield self.missing_shards()
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (exclusive_lock(self.path / "lock", f"waiting for another process writing the "
                                                   f"feature cache {self.path}")
                if group.is_main else nullcontext())
        with lock:  # held by rank 0 on behalf of the whole group
            if group.is_main:
                for leftover in self.path.glob(".*.tmp"):
                    leftover.unlink()
                self._manifest = self._read_valid_manifest(fix=True, verify=verify)
            group.barrier()
            if not group.is_main:
                self._manifest = self._read_valid_manifest()
            mine = [i for i in self.missing_shards() if i % group.world_size == group.rank]
            self._fragment = {"file": self.path / f"manifest.rank{group.rank:05d}.json",
                              "shards": {}, "info": {}}
            try:
                yield mine
            finally:
                fragment, self._fragment = self._fragment, None
            group.barrier()  # every rank's shards and fragment are on disk
            if group.is_main:
                self._manifest = self._read_valid_manifest(fix=True)
                if fragment["info"]:
                    self._manifest["info"].update(fragment["info"])
                    write_json(self.path / MANIFEST, self._manifest)
        group.barrier()
        if not group.is_main:
            self._manifest = self._read_valid_manifest()

    def write_shard(self, index: int, features: torch.Tensor) -> None:
        """Store the features of shard `index` ([rows, *item_shape]) atomically, then record it."""
        rows = self.shard_rows(index)
        if features.shape[0] != len(rows):
            raise ValueError(f"shard {index} needs {len(rows)} rows, got {features.shape[0]}")
        item_shape = list(features.shape[1:])
        recorded = self._manifest["item_shape"]
        if recorded is not None and recorded != item_shape and self._fragment is not None:
            raise AgiqaError(f"feature cache {self.path} holds items of shape {recorded}, the "
                             f"encoder now gives {item_shape}: delete the folder, or extract "
                             "once in a single process, which rebuilds it.")
        if recorded is not None and recorded != item_shape:
            self._manifest = self._reset(
                f"the encoder now gives items of shape {item_shape}, the cache holds {recorded}",
                on_disk=True, shard_size=self.shard_size)  # the caller planned on this layout
        self._manifest["item_shape"] = item_shape
        file = self._shard_file(index)
        tensor = features.detach().to("cpu", self.dtype).contiguous()
        meta = {"start": str(rows.start), "stop": str(rows.stop)}
        with atomic_path(file) as tmp:
            tmp.write_bytes(canonical_shard_bytes(tensor, meta))
            entry = {"file": file.name, "start": rows.start, "stop": rows.stop,
                     "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
        self._manifest["shards"][str(index)] = entry
        self._manifest["complete"] = len(self._manifest["shards"]) == self.num_shards
        if self._fragment is not None:  # a rank of a launched fill: its own fragment
            self._fragment["shards"][str(index)] = entry
            write_json(self._fragment["file"], {
                "identity": self.identity, "shard_size": self.shard_size,
                "item_shape": item_shape, "shards": self._fragment["shards"]})
            return
        write_json(self.path / MANIFEST, self._manifest)

    def write_all(self, features: torch.Tensor) -> None:
        """Store a whole [n, *item_shape] array (lock held), e.g. features imported from files."""
        if features.shape[0] != self.n:
            raise ValueError(f"the store holds {self.n} rows, got {features.shape[0]}")
        for index in range(self.num_shards):
            rows = self.shard_rows(index)
            self.write_shard(index, features[rows.start:rows.stop])

    def update_info(self, fields: dict[str, Any]) -> None:
        """Merge `fields` (JSON-serialisable) into the info block and save it (lock held).

        Inside a launched `sharded_writing`, rank 0's fields are saved when it merges; the
        other ranks' are dropped.
        """
        fields = json.loads(json.dumps(fields, default=str))
        if self._fragment is not None:
            if distributed.current().is_main:
                self._fragment["info"].update(fields)
            return
        self._manifest["info"].update(fields)
        write_json(self.path / MANIFEST, self._manifest)

    def discard(self, reason: str) -> None:
        """Delete every shard of this entry (logged with `reason`), e.g. to force a recompute."""
        with self.writing():
            self._manifest = self._reset(reason, on_disk=True)

    def refresh(self) -> None:
        """Read the manifest again (after another process changed the entry)."""
        self._manifest = self._read_valid_manifest()

    # --- reading ------------------------------------------------------------------------------
    def load(self) -> torch.Tensor:
        """All features as one tensor [n, *item_shape] in the storage dtype (checksums verified).

        Shards whose checksum fails are dropped from the manifest and CorruptCacheError raised;
        filling the store again recomputes them.
        """
        if not self.complete:
            raise AgiqaError(f"feature cache {self.path} is incomplete "
                             f"({len(self.missing_shards())} of {self.num_shards} shards missing); "
                             "run the extraction again to finish it.")
        out = torch.empty((self.n, *self.item_shape), dtype=self.dtype)
        corrupt = []
        for index in range(self.num_shards):
            entry = self._manifest["shards"][str(index)]
            try:
                data = (self.path / entry["file"]).read_bytes()
            except OSError:
                data = b""
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                corrupt.append(index)
                continue
            rows = self.shard_rows(index)
            out[rows.start:rows.stop] = load_safetensors_bytes(data)["features"]
        if corrupt:
            with self.writing():
                for index in corrupt:
                    self._manifest["shards"].pop(str(index), None)
                self._manifest["complete"] = False
                write_json(self.path / MANIFEST, self._manifest)
            raise CorruptCacheError(f"{len(corrupt)} shard(s) of feature cache {self.path} "
                                    f"failed their checksum (first: shard {corrupt[0]}); they "
                                    "were dropped, extract again to recompute them.")
        return out

    def fill_and_load(self, fill: Callable[[FeatureStore], object]) -> torch.Tensor:
        """`fill(self)` computes the missing shards, then `load()`.

        Shards failing their checksum while loading are logged and computed again, once. In a
        launched run every rank loads, and all fill again when any rank found a corrupt shard.
        """
        group = distributed.current()
        for _attempt in range(2):
            fill(self)
            try:
                features, corrupt = self.load(), False
            except CorruptCacheError as err:
                log.warning("%s", err)
                features, corrupt = None, True
            if group.distributed:
                corrupt = group.any(corrupt)
            if not corrupt:
                return features
        raise AgiqaError(f"feature cache {self.path} is corrupted again right after being "
                         "rewritten; check the disk, or delete the folder.")
