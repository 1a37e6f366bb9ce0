"""MA-AGIQA semantic vectors: two questions per image, one pooled MLLM vector each, cached.

`extract_semantic_vectors` asks a `SemanticEncoder` (see `agiqa_lib.backbones.mllm`) the two
released questions about every image and stores the result as ONE float16 array [N, 2, D]
(`vectors.safetensors`, question order as in `QUESTIONS`) plus a JSON manifest, in
`cache_dir()/semantic/<entry>/`. While running, finished shards go to a resumable
`agiqa_lib.core.cache.FeatureStore` under `<entry>/parts/`, so a killed run resumes where it
stopped; the single array is written (atomically) once every shard is done. A manifest that
does not describe the requested vectors is never reused: the entry is rebuilt.

`import_official_vectors` reads the per-image `.pt` files released with MA-AGIQA
(mPLUG-Owl2-LLaMA2-7B, [1, 4096] float16 each), refusing anything that is not such a tensor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from agiqa_lib.core.cache import CacheKey, CorruptCacheError, FeatureStore, file_list_hash
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import load_tensors, open_rgb, read_json, save_tensors, sha256_file, write_json
from agiqa_lib.backbones.mllm import STAND_IN_NOTE, SemanticEncoder

log = logging.getLogger(__name__)

QUESTIONS: dict[str, str] = {
    "semantic_content": "Evaluate the input image to determine if its quality is compromised "
                        "due to a lack of meaningful semantic content.",
    "coherence": "Evaluate if the image quality is compromised due to violations of coherence.",
}
OFFICIAL_MODEL_ID = "official:mplug-owl2-llama2-7b"
OFFICIAL_DIM = 4096
MANIFEST_FORMAT = "agiqa-semantic-v1"
VECTORS_FILE = "vectors.safetensors"
MANIFEST_FILE = "manifest.json"


# --------------------------------------------------------------------------- extraction


def extract_semantic_vectors(df: pd.DataFrame, encoder: SemanticEncoder,
                             cache_dir: str | os.PathLike | None = None,
                             batch_size: int = 8, resume: bool = True, shard_size: int = 64,
                             dataset: str | None = None, progress: bool = True) -> torch.Tensor:
    """Semantic vectors [N, 2, D] (float32; stored float16) of `df.path`, computed once, cached.

    `encoder` is a `SemanticEncoder` (`create_mllm(...)`); axis 1 follows `QUESTIONS`
    (semantic content, coherence). `cache_dir` is the root holding the cache entries (default
    `cache_dir()/semantic`). `resume=False` discards any cached or partial result first.
    Unreadable images raise AgiqaError naming the file: nothing is skipped.
    """
    if batch_size < 1:
        raise AgiqaError(f"batch_size must be a positive integer, got {batch_size}.")
    paths = [str(p) for p in df["path"]]
    identity = _identity(paths, encoder)
    entry = semantic_cache_path(identity, cache_dir)
    if not resume and entry.exists():
        log.info("semantic cache %s discarded (resume=False)", entry)
        shutil.rmtree(entry)
    cached = _read_entry(entry, identity)
    if cached is not None:
        return cached.float()
    store = FeatureStore(_store_key(identity), n=len(paths),
                         files_hash=identity["file_list_sha256"], dtype=torch.float16,
                         shard_size=shard_size, root=entry / "parts")
    stats = _fill(store, paths, encoder, batch_size, progress)
    try:
        vectors = store.load()
    except CorruptCacheError as err:  # a shard rotted between writing and reading: redo it
        log.warning("%s", err)
        stats = _fill(store, paths, encoder, batch_size, progress)
        vectors = store.load()
    _write_entry(entry, identity, vectors, dataset=dataset, extraction=stats)
    shutil.rmtree(entry / "parts", ignore_errors=True)
    return vectors.float()


def _fill(store: FeatureStore, paths: list[str], encoder: SemanticEncoder, batch_size: int,
          progress: bool) -> dict[str, float]:
    """Compute the missing shards (both questions per batch) and log images/s."""
    questions = list(QUESTIONS.values())
    start, computed = time.perf_counter(), 0
    with store.writing():
        missing = store.missing_shards()
        total = sum(len(store.shard_rows(i)) for i in missing)
        desc = f"semantic vectors ({encoder.profile}{', stand-in' if encoder.is_stand_in else ''})"
        with tqdm(total=total, unit="img", desc=desc, disable=not progress) as bar:
            for shard in missing:
                rows = list(store.shard_rows(shard))
                parts = []
                for i in range(0, len(rows), batch_size):
                    images = [open_rgb(paths[r]) for r in rows[i:i + batch_size]]
                    parts.append(encoder.encode_questions(images, questions))  # [b, 2, D]
                    bar.update(len(images))
                    computed += len(images)
                store.write_shard(shard, torch.cat(parts))
    seconds = time.perf_counter() - start
    rate = computed / seconds if computed and seconds > 0 else float("nan")
    if computed:
        log.info("semantic vectors: %d images in %.1f s (%.2f images/s, %s)", computed, seconds,
                 rate, encoder.model_id)
    return {"images_computed": computed, "seconds": round(seconds, 3),
            "images_per_s": round(rate, 4) if computed else None}


# --------------------------------------------------------------------------- cache entries


def _identity(paths: Sequence[str], encoder) -> dict[str, Any]:
    """Everything the vectors depend on; a cached entry is reused only if this matches exactly."""
    return {
        "format": MANIFEST_FORMAT,
        "file_list_sha256": file_list_hash(paths),
        "n": len(paths),
        "model_id": encoder.model_id,
        "profile": encoder.profile,
        "is_stand_in": bool(encoder.is_stand_in),
        "dim": int(encoder.dim),
        "image_placement": encoder.image_placement,
        "questions": dict(QUESTIONS),
        "pooling": "mean of last-layer hidden states (after final norm) over all non-padding "
                   "positions, text and image tokens",
    }


def _store_key(identity: dict[str, Any]) -> CacheKey:
    """Key of the scratch store of partial shards (inside an entry already keyed by identity)."""
    questions = hashlib.sha256(json.dumps(identity["questions"], sort_keys=True).encode())
    return CacheKey(dataset="semantic", model_id=identity["model_id"],
                    profile=identity["profile"],
                    transform=f"semantic:{identity['image_placement']}:"
                              f"{questions.hexdigest()[:16]}:dim{identity['dim']}")


def semantic_cache_path(identity: dict[str, Any], cache_dir: str | os.PathLike | None = None
                        ) -> Path:
    """Folder of the cache entry for an identity (see `semantic_cache_entry`)."""
    from agiqa_lib.core.paths import cache_dir as default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "semantic"
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{identity['profile']}-{identity['model_id']}")
    return root / f"{slug.strip('-')[:60]}-{digest}"


def semantic_cache_entry(df: pd.DataFrame, encoder: SemanticEncoder, cache_dir: str | os.PathLike | None = None
                         ) -> Path:
    """Folder where `extract_semantic_vectors(df, encoder, cache_dir)` keeps its result."""
    return semantic_cache_path(_identity([str(p) for p in df["path"]], encoder), cache_dir)


def read_manifest(entry: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest of a finished cache entry (identity, stand-in note, extraction speed)."""
    path = Path(entry) / MANIFEST_FILE
    if not path.is_file():
        raise AgiqaError(f"no semantic-vector manifest at {path}; run the extraction first.")
    return read_json(path)


def _read_entry(entry: Path, identity: dict[str, Any]) -> torch.Tensor | None:
    """The cached [N, 2, D] array if the entry is complete and describes `identity`, else None.

    A manifest or array that does not match is logged and its entry deleted (never reused).
    """
    manifest_path, vectors_path = entry / MANIFEST_FILE, entry / VECTORS_FILE
    if not manifest_path.is_file():
        return None
    problem = ""
    try:
        manifest = read_json(manifest_path)
        recorded = manifest.get("identity")
        if recorded != identity:
            changed = sorted(k for k in set(recorded or {}) | set(identity)
                             if (recorded or {}).get(k) != identity.get(k))
            problem = f"manifest describes other vectors (differs in {changed})"
        elif sha256_file(vectors_path) != manifest.get("vectors_sha256"):
            problem = "vectors file missing or its checksum differs from the manifest"
        else:
            vectors = load_tensors(vectors_path)["vectors"]
            expected = (identity["n"], len(QUESTIONS), identity["dim"])
            if tuple(vectors.shape) != expected or vectors.dtype != torch.float16:
                problem = f"array {tuple(vectors.shape)} {vectors.dtype}, expected {expected} fp16"
            else:
                return vectors
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        problem = f"unreadable ({type(err).__name__}: {err})"
    log.warning("semantic cache %s is rebuilt: %s", entry, problem)
    shutil.rmtree(entry)
    return None


def _write_entry(entry: Path, identity: dict[str, Any], vectors: torch.Tensor,
                 dataset: str | None, extraction: dict[str, Any] | None) -> None:
    """Write the single fp16 array, then the manifest (atomically, array first)."""
    vectors = vectors.to(torch.float16).contiguous()
    save_tensors(entry / VECTORS_FILE, {"vectors": vectors},
                 metadata={"model_id": identity["model_id"], "profile": identity["profile"],
                           "is_stand_in": str(identity["is_stand_in"]).lower()})
    manifest = {
        "identity": identity,
        "dataset": dataset,
        "question_order": list(QUESTIONS),
        "shape": list(vectors.shape),
        "dtype": "float16",
        "vectors_file": VECTORS_FILE,
        "vectors_sha256": sha256_file(entry / VECTORS_FILE),
        "extraction": extraction,
        "note": _note(identity),
    }
    write_json(entry / MANIFEST_FILE, manifest)


def _note(identity: dict[str, Any]) -> str:
    if identity["is_stand_in"]:
        return f"STAND-IN vectors ({STAND_IN_NOTE})."
    if identity["model_id"] == OFFICIAL_MODEL_ID:
        return "Official MA-AGIQA vectors (mPLUG-Owl2-LLaMA2-7B), imported from .pt files."
    return f"Pooled last-layer hidden states of {identity['model_id']}."




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
    for i, pair in enumerate(tqdm(files, desc="official vectors", unit="img",
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

    Read them back with `load_cached_vectors(df, OfficialVectorsSource(), cache_dir)`.
    """
    vectors = import_official_vectors(folder, list(df["name"]))
    identity = _identity([str(p) for p in df["path"]], OfficialVectorsSource())
    entry = semantic_cache_path(identity, cache_dir)
    _write_entry(entry, identity, vectors, dataset=dataset,
                 extraction={"imported_from": str(Path(folder).resolve())})
    return entry


def load_cached_vectors(df: pd.DataFrame, source, cache_dir: str | os.PathLike | None = None
                        ) -> torch.Tensor:
    """The finished cached vectors [N, 2, D] (float32) of `df` for an encoder or source.

    Raises AgiqaError when there is no matching entry (run the extraction or import first).
    """
    identity = _identity([str(p) for p in df["path"]], source)
    entry = semantic_cache_path(identity, cache_dir)
    vectors = _read_entry(entry, identity)
    if vectors is None:
        raise AgiqaError(f"no cached semantic vectors of {source.model_id} for these "
                         f"{len(df)} images (looked in {entry}); run `agiqa semantic extract` "
                         "or `agiqa semantic import` first.")
    return vectors.float()


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
