"""Score users' own images with any checkpoint trained by notebooks 02 or 04.

A checkpoint is a safetensors file whose metadata names the model family
(`agiqa_model`); the family's module rebuilds the model and provides a scorer. Unreadable
files are skipped with a warning and listed at the end; one bad file never stops a run.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import pandas as pd
from PIL import Image
from safetensors import safe_open
from tqdm.auto import tqdm

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import open_rgb

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

# agiqa_model metadata value -> module providing load_scorer(checkpoint_path, device)
SCORER_MODULES = {
    "clip_agiqa": "agiqa_lib.clip_agiqa.model",
    "ma_agiqa": "agiqa_lib.ma_agiqa.model",
}


class Scorer(Protocol):
    """What a model family's `load_scorer` returns."""

    def score_images(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass
class ScoreRun:
    """Scores of the readable images and the files that were skipped (with reasons)."""

    scores: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata block of a safetensors checkpoint (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise AgiqaError(f"checkpoint {path} not found: pass a .safetensors file saved by "
                         "notebook 02 (CLIP-AGIQA) or 04 (MA-AGIQA)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise AgiqaError(f"{path} is not a readable safetensors checkpoint ({err})") from None


def load_scorer(checkpoint: str | os.PathLike, device: str = "cpu") -> Scorer:
    """Rebuild the model stored in `checkpoint` and return its scorer."""
    meta = checkpoint_metadata(checkpoint)
    family = meta.get("agiqa_model")
    if family not in SCORER_MODULES:
        raise AgiqaError(f"{checkpoint} does not say which model it holds (metadata "
                         f"agiqa_model={family!r}; expected one of {sorted(SCORER_MODULES)})")
    module = importlib.import_module(SCORER_MODULES[family])
    return module.load_scorer(checkpoint, device=device)


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            found.append(path)
        else:
            raise AgiqaError(f"{path} is neither an image file nor a folder")
    return found


def score_images(scorer: Scorer, inputs: Iterable[str | os.PathLike],
                 batch_size: int = 16, progress: bool = True) -> ScoreRun:
    """Score every readable image under `inputs` in batches; skip (and record) bad files."""
    paths = collect_images(inputs)
    rows: list[tuple[str, float]] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(paths), desc="scoring", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch_paths, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(open_rgb(path))
                batch_paths.append(path)
            except Exception as err:  # any decoder error: skip this file only
                skipped.append((str(path), f"{type(err).__name__}: {err}"))
        if images:
            scores = np.asarray(scorer.score_images(images), dtype=float).reshape(-1)
            rows.extend(zip(map(str, batch_paths), scores.tolist()))
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    for path, reason in skipped:
        warnings.warn(f"skipped unreadable image {path}: {reason}", stacklevel=2)
    return ScoreRun(pd.DataFrame(rows, columns=["path", "score"]), skipped)


def evaluate_checkpoints(checkpoints: Iterable[str | os.PathLike], dataset: str,
                         root: str | os.PathLike | None, device: str = "cpu",
                         fast: bool = False, seed: int = 0) -> pd.DataFrame:
    """Score a whole dataset with each checkpoint and evaluate against its MOS.

    Used for cross-dataset generalisation (train on one dataset, test on another).
    `fast` evaluates a seeded sample of 64 images.
    """
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.evaluation.metrics import evaluate

    frame = load_dataset(dataset, root)
    if fast:
        frame = frame.sample(n=min(64, len(frame)), random_state=seed)
    rows = []
    for checkpoint in checkpoints:
        meta = checkpoint_metadata(checkpoint)
        run = score_images(load_scorer(checkpoint, device=device), frame["path"].tolist())
        scored = frame.merge(run.scores, on="path")
        metrics = evaluate(scored["score"].to_numpy(), scored["mos"].to_numpy(),
                           groups=scored["generator"].to_numpy() if "generator" in scored else None)
        rows.append({"checkpoint": Path(checkpoint).name, "model": meta.get("agiqa_model"),
                     "trained_on": json.loads(meta.get("extra", "{}")).get("dataset", meta.get("dataset")), "tested_on": dataset, **metrics})
    return pd.DataFrame(rows)
