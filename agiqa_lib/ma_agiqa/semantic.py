"""MA-AGIQA semantic vectors: two questions per image, one pooled MLLM vector each, cached.

`extract_semantic_vectors` asks a `SemanticEncoder` (see `agiqa_lib.backbones.mllm`) the two
released questions about every image and caches the result [N, 2, D] (float16, axis 1 in the
order of `QUESTIONS`) as one `agiqa_lib.core.cache.FeatureStore` entry under
`cache_dir()/semantic/`, like every other cached feature: same manifest, same checksums, same
resume after a kill, same logged rebuild when anything does not match. The store's identity
holds the model id, profile, stand-in flag, width, image placement, questions and pooling; its
info block holds what a reader should know (stand-in note, question order, dataset name,
extraction speed). `read_manifest` returns both.

Entry folders of the previous format (one `vectors.safetensors` beside its own manifest) are no
longer read: the vectors are extracted again into the store format, and a warning names the old
folders so that they can be deleted.

In a launched run (`accelerate launch` / `torchrun`, `core.distributed`) the extraction is
collective, as every cached feature's: rank i computes the missing shards s with s % world ==
i into the same entry (`FeatureStore.sharded_writing`), rank 0 merges the manifest; the import
of the released vectors is done by rank 0 while the others wait.

`import_official_vectors` reads the per-image `.pt` files released with MA-AGIQA
(mPLUG-Owl2-LLaMA2-7B, [1, 4096] float16 each), refusing anything that is not such a tensor.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agiqa_lib.backbones.lite_semantic import STAND_IN_NOTE
from agiqa_lib.backbones.semantic_encoder import SemanticEncoder
from agiqa_lib.core import distributed
from agiqa_lib.core.cache import CacheKey, FeatureStore
from agiqa_lib.core.content_key import file_list_hash
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.features import ExtractStats
from agiqa_lib.core.io import open_rgb
from agiqa_lib.core.manifest import read_store_manifest
from agiqa_lib.core.paths import cache_dir as default_cache_dir
from agiqa_lib.core.progress import progress_bar

log = logging.getLogger(__name__)

QUESTIONS: dict[str, str] = {
    "semantic_content": "Evaluate the input image to determine if its quality is compromised "
                        "due to a lack of meaningful semantic content.",
    "coherence": "Evaluate if the image quality is compromised due to violations of coherence.",
}
OFFICIAL_MODEL_ID = "official:mplug-owl2-llama2-7b"
OFFICIAL_DIM = 4096
POOLING = ("mean of last-layer hidden states (after final norm) over all non-padding "
           "positions, text and image tokens")
VIEW = "semantic"


# --------------------------------------------------------------------------- extraction


def extract_semantic_vectors(df: pd.DataFrame, encoder: SemanticEncoder,
                             cache_dir: str | os.PathLike | None = None,
                             batch_size: int = 8, resume: bool = True, shard_size: int = 64,
                             dataset: str | None = None, progress: bool = True) -> torch.Tensor:
    """Semantic vectors [N, 2, D] (float32; stored float16) of `df.path`, computed once, cached.

    `encoder` is a `SemanticEncoder` (`create_mllm(...)`); axis 1 follows `QUESTIONS`
    (semantic content, coherence). `cache_dir` is the root holding the cache entries (default
    `cache_dir()/semantic`); `shard_size` applies when the entry is created. `resume=False`
    discards any cached or partial result first. `dataset` is recorded in the manifest info.
    Unreadable images raise AgiqaError naming the file: nothing is skipped. In a launched run
    every rank calls this and computes its share of the shards.
    """
    if batch_size < 1:
        raise AgiqaError(f"batch_size must be a positive integer, got {batch_size}.")
    paths = [str(p) for p in df["path"]]
    store = _store(paths, encoder, cache_dir, shard_size)
    if not resume:
        with distributed.main_process_first() as main:
            if main and store.path.exists():
                store.discard("resume=False: every vector is computed again")
        store.refresh()
    if not store.complete:
        _warn_old_format(store.path.parent)
    vectors = store.fill_and_load(
        lambda s: _fill(s, paths, encoder, batch_size, progress, dataset))
    return vectors.float()


def _fill(store: FeatureStore, paths: list[str], encoder: SemanticEncoder, batch_size: int,
          progress: bool, dataset: str | None) -> None:
    """Compute the missing shards (both questions per batch); record notes and images/s."""
    questions = list(QUESTIONS.values())
    start, computed = time.perf_counter(), 0
    main = distributed.current().is_main
    with store.sharded_writing() as missing:  # a launched run: this rank's share
        total = sum(len(store.shard_rows(i)) for i in missing)
        desc = f"semantic vectors ({encoder.profile}{', stand-in' if encoder.is_stand_in else ''})"
        with progress_bar(total=total, unit="img", desc=desc,
                          disable=not progress or not main) as bar:
            for shard in missing:
                rows = list(store.shard_rows(shard))
                parts = []
                for i in range(0, len(rows), batch_size):
                    images = [open_rgb(paths[r]) for r in rows[i:i + batch_size]]
                    parts.append(encoder.encode_questions(images, questions))  # [b, 2, D]
                    bar.update(len(images))
                    computed += len(images)
                store.write_shard(shard, torch.cat(parts))
        stats = ExtractStats(store.path, store.n, computed,
                             time.perf_counter() - start).combined()
        computed = stats.n_computed
        if computed or not store.info:
            store.update_info({**_info(encoder, dataset), "extraction": stats.as_info()})
    if computed and main:
        log.info("semantic vectors: %d images in %.1f s (%.2f images/s, %s)", computed,
                 stats.seconds, stats.images_per_s, encoder.model_id)


# --------------------------------------------------------------------------- cache entries


def _store(paths: Sequence[str], source, cache_dir: str | os.PathLike | None = None,
           shard_size: int = 64) -> FeatureStore:
    """The cache entry of `source`'s vectors (an encoder, or `OfficialVectorsSource`) for `paths`.

    The vectors depend on the images' bytes, not on the dataset's name, so the key has none.
    """
    key = CacheKey(dataset=None, model_id=source.model_id, profile=source.profile,
                   transform="the encoder's own image processor", view=VIEW,
                   params={"is_stand_in": bool(source.is_stand_in), "dim": int(source.dim),
                           "image_placement": source.image_placement,
                           "questions": dict(QUESTIONS), "pooling": POOLING})
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "semantic"
    return FeatureStore(key, len(paths), file_list_hash(paths), dtype=torch.float16,
                        shard_size=shard_size, root=root)


def _info(source, dataset: str | None) -> dict[str, Any]:
    """The manifest's info block: what a reader of the vectors should know (not identity)."""
    return {"note": _note(source.model_id, bool(source.is_stand_in)),
            "question_order": list(QUESTIONS), "dataset": dataset}


def _note(model_id: str, is_stand_in: bool) -> str:
    if is_stand_in:
        return f"STAND-IN vectors ({STAND_IN_NOTE})."
    if model_id == OFFICIAL_MODEL_ID:
        return "Official MA-AGIQA vectors (mPLUG-Owl2-LLaMA2-7B), imported from .pt files."
    return f"Pooled last-layer hidden states of {model_id}."


def _warn_old_format(root: Path) -> None:
    """Name the entry folders of the previous cache format under `root` (they are not read)."""
    old = sorted(file.parent.name for file in root.glob("*/vectors.safetensors"))
    if old:
        log.warning("semantic cache %s holds %d folder(s) of the previous format (%s), which are "
                    "no longer read: the vectors are extracted again into the feature-store "
                    "format; delete those folders to free the space", root, len(old),
                    ", ".join(old[:3]) + (", ..." if len(old) > 3 else ""))


def semantic_cache_entry(df: pd.DataFrame, encoder: SemanticEncoder,
                         cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder where `extract_semantic_vectors(df, encoder, cache_dir)` keeps its result."""
    return _store([str(p) for p in df["path"]], encoder, cache_dir).path


def read_manifest(entry: str | os.PathLike) -> dict[str, Any]:
    """What a finished semantic-vector entry holds, from its store manifest.

    Keys: `identity` (model_id, profile, is_stand_in, dim, image_placement, questions, pooling,
    files_hash, n, dtype, ...), `shape` [N, 2, D], and the info block: `note`, `dataset`,
    `question_order`, `extraction` ({images_computed, seconds, images_per_s} of the run that
    finished it, or {imported_from}). Raises AgiqaError for a missing or unfinished entry.
    """
    manifest = read_store_manifest(entry)
    identity = manifest["identity"]
    if not manifest["complete"] or identity.get("view") != VIEW:
        raise AgiqaError(f"{entry} is not a finished semantic-vector cache entry; run "
                         "`agiqa semantic extract` (or `agiqa semantic import`) first.")
    note = _note(str(identity.get("model_id")), bool(identity.get("is_stand_in")))
    return {"dataset": None, "extraction": None, "note": note, **manifest["info"],
            "identity": identity, "shape": [identity.get("n"), *(manifest["item_shape"] or [])]}


# --------------------------------------------------------------------------- official vectors


def import_official_vectors(folder: str | os.PathLike, names: Sequence[str]) -> torch.Tensor:
    """Official MA-AGIQA vectors [N, 2, 4096] (float32) for image `names`, from `.pt` files.

    Reads `{stem}_semantic_content.pt` and `{stem}_coherence.pt` in `folder` with
    `torch.load(weights_only=True)`; each must be a [1, 4096] tensor. A missing file, a pickled
    object that is not a plain tensor, or a wrong shape raises AgiqaError naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AgiqaError(f"official semantic-vector folder {folder} does not exist; pass the "
                         "folder holding the released {stem}_semantic_content.pt files.")
    stems = [Path(str(name)).stem for name in names]
    files = [[folder / f"{stem}_{question}.pt" for question in QUESTIONS] for stem in stems]
    missing = [f.name for pair in files for f in pair if not f.is_file()]
    if missing:
        raise AgiqaError(f"{len(missing)} official semantic-vector files missing in {folder} "
                         f"(first: {', '.join(missing[:3])}); each image needs "
                         "{stem}_semantic_content.pt and {stem}_coherence.pt.")
    out = torch.empty(len(stems), len(QUESTIONS), OFFICIAL_DIM)
    for i, pair in enumerate(progress_bar(files, desc="official vectors", unit="img",
                                          disable=len(files) < 500)):
        for j, file in enumerate(pair):
            out[i, j] = _load_official_tensor(file)[0]
    return out


def _load_official_tensor(file: Path) -> torch.Tensor:
    """One released vector file: a plain [1, 4096] floating tensor, nothing else."""
    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AgiqaError(f"{file} is not a plain tensor file loadable with weights_only=True "
                         f"({reason}); refusing to unpickle it.") from None
    if not isinstance(value, torch.Tensor):
        raise AgiqaError(f"{file} holds a {type(value).__name__}, not a tensor; expected a "
                         f"[1, {OFFICIAL_DIM}] float16 tensor.")
    if tuple(value.shape) != (1, OFFICIAL_DIM) or not value.is_floating_point():
        raise AgiqaError(f"{file} holds a {tuple(value.shape)} {value.dtype} tensor; expected "
                         f"[1, {OFFICIAL_DIM}] float16.")
    return value.float()


class OfficialVectorsSource:
    """Identity of the imported official vectors, for storing them in the semantic cache."""

    model_id = OFFICIAL_MODEL_ID
    profile = "full"
    is_stand_in = False
    dim = OFFICIAL_DIM
    image_placement = "after_text"


def cache_official_vectors(df: pd.DataFrame, folder: str | os.PathLike,
                           cache_dir: str | os.PathLike | None = None,
                           dataset: str | None = None) -> Path:
    """Import the official `.pt` vectors of `df` into the semantic cache; returns the entry folder.

    Read them back with `load_cached_vectors(df, OfficialVectorsSource(), cache_dir)`. In a
    launched run (collective) rank 0 imports while the others wait.
    """
    source = OfficialVectorsSource()
    store = _store([str(p) for p in df["path"]], source, cache_dir)
    with distributed.main_process_first() as main:
        if main:
            vectors = import_official_vectors(folder, list(df["name"]))
            with store.writing():
                store.write_all(vectors)
                store.update_info({**_info(source, dataset),
                                   "extraction": {"imported_from": str(Path(folder).resolve())}})
    return store.path


def load_cached_vectors(df: pd.DataFrame, source, cache_dir: str | os.PathLike | None = None
                        ) -> torch.Tensor:
    """The finished cached vectors [N, 2, D] (float32) of `df` for an encoder or source.

    Raises AgiqaError when there is no matching entry (run the extraction or import first),
    and CorruptCacheError (an AgiqaError) when a shard fails its checksum.
    """
    store = _store([str(p) for p in df["path"]], source, cache_dir)
    if not store.complete:
        raise AgiqaError(f"no cached semantic vectors of {source.model_id} for these "
                         f"{len(df)} images (looked in {store.path}); run `agiqa semantic "
                         "extract` or `agiqa semantic import` first.")
    return store.load().float()


# --------------------------------------------------------------------------- analysis


def question_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity [N] between the semantic-content and coherence vectors."""
    return torch.nn.functional.cosine_similarity(vectors[:, 0].float(), vectors[:, 1].float(),
                                                 dim=-1)


def summary_record(vectors: torch.Tensor, manifest: dict[str, Any]) -> dict[str, Any]:
    """Key facts of one extraction for a notebook's summary file (JSON-serialisable)."""
    identity = manifest["identity"]
    cosine = question_cosine(vectors)
    return {
        "model_id": identity["model_id"], "profile": identity["profile"],
        "is_stand_in": identity["is_stand_in"], "note": manifest["note"],
        "image_placement": identity["image_placement"], "n": identity["n"],
        "dim": identity["dim"], "shape": list(vectors.shape), "dataset": manifest["dataset"],
        "images_per_s": (manifest.get("extraction") or {}).get("images_per_s"),
        "question_cosine_median": float(cosine.median()),
        "question_cosine_min": float(cosine.min()),
    }
