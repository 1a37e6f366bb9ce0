"""Frozen image features extracted once into the resumable cache (`agiqa_lib.core.cache`).

`extract_features` runs any image encoder over a list of files in batches and stores the result
shard by shard; `clip_image_features` (CLIP-AGIQA: a fixed test view plus K augmented views)
and `backbone_tokens` (MANIQA's frozen backbone tokens) build on it. Augmented view k of image
i is reproducible: its random transform is seeded from (seed, view, i), so a resumed run gives
the same features as an uninterrupted one. Entries are keyed by the images' content
(`content_key.file_list_hash`): a replaced image, even of the same size, selects a new entry.

In a launched run (`accelerate launch` / `torchrun`, see `core.distributed`) `fill_store` is
collective: every rank computes the shards `FeatureStore.sharded_writing` assigns it (shard
i -> rank i % world), with the same batches as one process would use (batches never straddle
shards), so the merged cache holds the same bytes; the recorded speed is the group's (images
of all ranks over the slowest rank's time, with `processes`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from agiqa_lib.core import distributed
from agiqa_lib.core.cache import CacheKey, FeatureStore
from agiqa_lib.core.content_key import file_list_hash
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.folding import fold_batchnorm
from agiqa_lib.core.io import open_rgb
from agiqa_lib.core.progress import progress_bar

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]
Encoder = Callable[[torch.Tensor], torch.Tensor]


def describe_transform(transform: object) -> str:
    """Stable text description of a transform for cache keys: its repr without memory addresses."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


# Frozen-encoder inference on a CPU is faster in small batches, whose activations stay in the
# caches: Lite0 1.7x at 4 images of 224-256 px against 32 / 16, and at 1 image of 512 px against
# 16, on 2 cores, per-image outputs equal (`benchmarks/bench_batch_size.py`). So a CPU batch
# holds about CPU_BATCH_PIXELS (a power of two of images); accelerators keep their batches.
CPU_BATCH_PIXELS = 4 * 256 * 256


def auto_batch_size(batch_size: int | None, device: str | torch.device, accelerator: int,
                    side: int = 256) -> int:
    """`batch_size`, or when None: on a CPU the largest power of two of `side` x `side` images
    within `CPU_BATCH_PIXELS` (4 at 224-256 px, 1 at 512), elsewhere `accelerator`."""
    if batch_size is not None:
        return batch_size
    if torch.device(device).type != "cpu":
        return accelerator
    return 2 ** max(0, int(math.log2(CPU_BATCH_PIXELS / side ** 2)))


def item_seed(seed: int, view: str, index: int) -> int:
    """Seed of the random transform of image `index` in augmented view `view`."""
    digest = hashlib.sha256(f"{seed}:{view}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for one transform call, then restore the caller's RNG state."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _ImageFiles(Dataset):
    """Loads and transforms images by index; errors travel back as text so they name the file.

    A random view seeds item i from `seed_rows[i]` (default i): the item's row in the whole
    dataset, so a subset of the rows gets the very pixels the whole list would give them.
    """

    def __init__(self, paths: Sequence[str], transform: Transform, seed: int | None, view: str,
                 seed_rows: Sequence[int] | None = None):
        self.paths, self.transform, self.seed, self.view = list(paths), transform, seed, view
        self.seed_rows = None if seed_rows is None else [int(r) for r in seed_rows]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        path = self.paths[index]
        try:
            image = open_rgb(path)
        except AgiqaError as err:  # reported by the main process, naming the file
            return index, None, str(err)
        if self.seed is None:
            return index, self.transform(image), ""
        row = index if self.seed_rows is None else self.seed_rows[index]
        with _seeded(item_seed(self.seed, self.view, row)):
            return index, self.transform(image), ""


def _collate(items: list[tuple[int, torch.Tensor | None, str]]):
    errors = [error for _, _, error in items if error]
    if errors:
        return None, None, errors
    indices = torch.tensor([index for index, _, _ in items])
    return indices, torch.stack([tensor for _, tensor, _ in items]), []


@dataclass
class ExtractStats:
    """What one extraction call did: images computed (the rest came from the cache) and time."""

    path: Path
    n_total: int
    n_computed: int
    seconds: float
    processes: int = 1  # > 1: a launched run's group (images of all ranks, slowest rank's time)

    @property
    def images_per_s(self) -> float:
        """Throughput of the images computed in this call (loading, transform, encoder, write)."""
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")

    def as_info(self) -> dict[str, float | int | None]:
        """The `extraction` record kept in the store's manifest info (JSON-serialisable)."""
        info = {"images_computed": self.n_computed, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 4) if self.n_computed else None}
        if self.processes > 1:
            info["processes"] = self.processes
        return info

    def combined(self) -> ExtractStats:
        """The stats of the whole launched group (collective; itself for one process): images
        summed over the ranks, the slowest rank's seconds."""
        group = distributed.current()
        if not group.distributed:
            return self
        parts = group.all_gather((self.n_computed, self.seconds))
        return ExtractStats(self.path, self.n_total, sum(n for n, _ in parts),
                            max(s for _, s in parts), group.world_size)


def open_store(paths: Sequence[str], key: CacheKey, fp16: bool = False,
               shard_size: int = 512) -> FeatureStore:
    """The cache entry for these files and key (content-hashes the files; nothing is computed).

    An existing entry keeps the `shard_size` it was created with.
    """
    return FeatureStore(key, len(paths), file_list_hash(paths),
                        dtype=torch.float16 if fp16 else torch.float32, shard_size=shard_size)


def fill_store(store: FeatureStore, paths: Sequence[str], encode: Encoder, transform: Transform,
               batch_size: int | None = None, num_workers: int = 0,
               device: str | torch.device = "cpu", progress: bool = True, verify: bool = False,
               seed_rows: Sequence[int] | None = None) -> ExtractStats:
    """Compute the missing shards of `store` (the features of `paths`) and write each atomically.

    `seed_rows` (a random view of some rows of a dataset) seeds each item's transform from its
    dataset row instead of its position in `paths`; the store's key must then name those rows
    (`rows_param`). `batch_size` None: `auto_batch_size` (4 on a CPU, 32 elsewhere; pass a
    batch for images far from 224-256 px).

    `verify` first checks the SHA-256 of every cached shard, so that a corrupt one is logged
    and recomputed here rather than found later by `load()` (which always checks). The speed
    of a call that computed images is recorded in the manifest info (`extraction`). In a
    launched run every rank calls this and computes its share of the shards (see the module
    docstring); the returned stats are the group's.
    """
    batch_size = auto_batch_size(batch_size, device, accelerator=32)
    if batch_size < 1:
        raise AgiqaError(f"batch_size must be a positive integer, got {batch_size}.")
    start = time.perf_counter()
    computed = 0
    with store.sharded_writing(verify=verify) as missing:
        # Batches never straddle shards, so each shard is written as soon as it is complete.
        # The loader gets its own generator: whether the cache was warm must not change the
        # caller's random stream (random views are seeded per image instead).
        batches = []
        for shard in missing:
            rows = list(store.shard_rows(shard))
            batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        total = sum(len(batch) for batch in batches)
        if total:
            loader = DataLoader(_ImageFiles(paths, transform, store.key.seed, store.key.view,
                                            seed_rows),
                                batch_sampler=batches, num_workers=num_workers,
                                collate_fn=_collate, generator=torch.Generator(),
                                pin_memory=torch.device(device).type == "cuda")
            shards = iter(missing)
            shard, parts, filled = next(shards), [], 0
            with progress_bar(total=total, unit="img", desc=f"features {store.key.view}",
                              disable=not progress or not distributed.current().is_main
                              ) as bar, torch.inference_mode():
                for indices, images, errors in loader:
                    if errors:
                        raise AgiqaError(errors[0])
                    features = encode(images.to(device, non_blocking=True))
                    parts.append(features.to("cpu", store.dtype))
                    filled += len(indices)
                    computed += len(indices)
                    bar.update(len(indices))
                    if filled == len(store.shard_rows(shard)):
                        store.write_shard(shard, torch.cat(parts))
                        shard, parts, filled = next(shards, None), [], 0
        stats = ExtractStats(store.path, store.n, computed,
                             time.perf_counter() - start).combined()
        computed = stats.n_computed
        if computed:
            store.update_info({"extraction": stats.as_info()})
    if computed and distributed.current().is_main:
        log.info("extracted %d of %d images in %.1f s (%.1f images/s) into %s", computed,
                 store.n, stats.seconds, stats.images_per_s, store.path)
    return stats


def extract_features(paths: Sequence[str], encode: Encoder, transform: Transform, key: CacheKey,
                     batch_size: int | None = None, fp16: bool = False, num_workers: int = 0,
                     shard_size: int = 512, progress: bool = True,
                     device: str | torch.device = "cpu",
                     seed_rows: Sequence[int] | None = None) -> torch.Tensor:
    """Features [N, ...] of the images `paths`, computed once into the cache, then read from it.

    `encode` maps a batch [B, 3, H, W] (already on `device`) to [B, ...]; `fp16` stores (and
    returns) float16. A killed run resumes at the first missing shard. Unreadable images raise
    AgiqaError naming the file: nothing is skipped. `batch_size`, `seed_rows`: see
    `fill_store`.
    """
    store = open_store(paths, key, fp16=fp16, shard_size=shard_size)
    return store.fill_and_load(lambda s: fill_store(
        s, paths, encode, transform, batch_size=batch_size, num_workers=num_workers,
        device=device, progress=progress, seed_rows=seed_rows))


@dataclass(frozen=True)
class FeatureSpec:
    """How to compute one cached feature array: its cache key, encoder and image transform."""

    key: CacheKey
    encode: Encoder
    transform: Transform
    rows: tuple[int, ...] | None = None  # the dataset rows it covers (None: every row)

    def files(self, paths: Sequence[str]) -> list[str]:
        """The files of the rows this spec covers, in row order."""
        return list(paths) if self.rows is None else [paths[row] for row in self.rows]


def parse_views(views: Sequence[str], n_aug: int = 0) -> list[str]:
    """View names in order, no repeats: `views` ('test', 'aug<k>') then aug0..aug{n_aug-1}."""
    names = list(views) + [f"aug{k}" for k in range(n_aug)]
    for name in names:
        if name != "test" and not re.fullmatch(r"aug\d+", name):
            raise AgiqaError(f"unknown view {name!r}: use 'test' or 'aug<k>' (e.g. 'aug0').")
    return list(dict.fromkeys(names))


def rows_param(rows: Sequence[int]) -> dict[str, str]:
    """Cache-key identity of a subset of dataset rows (`CacheKey.params`): count and digest."""
    digest = hashlib.sha256(",".join(str(int(r)) for r in rows).encode()).hexdigest()
    return {"rows": f"{len(rows)}:{digest[:16]}"}


def clip_view(bundle, dataset: str, view: str = "test", seed: int = 0,
              rows: Sequence[int] | None = None) -> FeatureSpec:
    """CLIP `encode_image` features (not normalised) of one view of `bundle` (a ClipBundle).

    View "test" uses `preprocess_val`; "aug<k>" uses `preprocess_train`, seeded per image from
    (seed, view, row). `rows` restricts the spec to some dataset rows (e.g. the training rows,
    the only ones augmented views are trained on); each gets the pixels it gets in the
    whole-dataset entry, so its features equal that entry's to float rounding (batches are cut
    differently). The features come from the image tower with its batch norms folded
    (`core.folding`; `encode_image` is the tower's output when not normalised).
    """
    (view,) = parse_views([view])
    test = view == "test"
    transform = bundle.preprocess_val if test else bundle.preprocess_train
    rows = None if rows is None else tuple(int(r) for r in rows)
    key = CacheKey(dataset=dataset, model_id=f"{bundle.model_id}/encode_image",
                   profile=bundle.profile, transform=describe_transform(transform), view=view,
                   seed=None if test else seed, params={} if rows is None else rows_param(rows))
    visual, dtype = fold_batchnorm(bundle.model.visual), bundle.dtype
    return FeatureSpec(key, lambda x: visual(x.to(dtype)), transform, rows)


def backbone_view(backbone: torch.nn.Module, dataset: str, profile: str) -> FeatureSpec:
    """Frozen IQA-backbone tokens [C, 784] per image (`backbone.transform(False)`), computed by
    a copy with its batch norms folded (`core.folding`)."""
    transform = backbone.transform(False)
    key = CacheKey(dataset=dataset, model_id=backbone.model_id, profile=profile,
                   transform=describe_transform(transform))
    return FeatureSpec(key, fold_batchnorm(backbone), transform)


def clip_image_features(df: pd.DataFrame, bundle, dataset: str, views: Sequence[str] = ("test",),
                        n_aug: int = 0, seed: int = 0, batch_size: int | None = None,
                        fp16: bool = False, num_workers: int = 0, shard_size: int = 512,
                        progress: bool = True,
                        aug_rows: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Cached CLIP image features of `df.path` per view: {view: [N, embed_dim]}.

    Views are "test" and/or "aug<k>" (`views`, plus aug0..aug{n_aug-1}); see `clip_view`.
    With `aug_rows` the augmented views cover those rows only ([len(aug_rows), embed_dim], in
    that order), each row's features those of its row of the whole-dataset view (see
    `clip_view`). Runs on the bundle's device.
    """
    paths = [str(p) for p in df["path"]]
    out = {}
    for view in parse_views(views, n_aug):
        spec = clip_view(bundle, dataset, view, seed, rows=None if view == "test" else aug_rows)
        out[view] = extract_features(spec.files(paths), spec.encode, spec.transform, spec.key,
                                     batch_size=batch_size, fp16=fp16, num_workers=num_workers,
                                     shard_size=shard_size, progress=progress,
                                     device=bundle.device, seed_rows=spec.rows)
    return out


def backbone_tokens(df: pd.DataFrame, backbone: torch.nn.Module, dataset: str, profile: str,
                    batch_size: int | None = None, fp16: bool = True, num_workers: int = 0,
                    shard_size: int = 256, progress: bool = True) -> torch.Tensor:
    """Cached frozen IQA-backbone tokens [N, C, 784] of `df.path` (fp16 storage by default).

    `backbone` is a `models.iqa_backbone.IqaBackbone` in eval mode; runs on its device, in
    batches of `batch_size` (None: 4 on a CPU, 16 elsewhere).
    """
    spec = backbone_view(backbone, dataset, profile)
    device = next(backbone.parameters()).device
    return extract_features([str(p) for p in df["path"]], spec.encode, spec.transform, spec.key,
                            batch_size=auto_batch_size(batch_size, device, 16), fp16=fp16,
                            num_workers=num_workers, shard_size=shard_size, progress=progress,
                            device=device)
