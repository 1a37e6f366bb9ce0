"""Score users' own images with any checkpoint trained by notebooks 02 or 04.

A checkpoint is a safetensors file whose metadata names the model family
(`agiqa_model`); the family's module rebuilds the model and provides a scorer. Unreadable
files are skipped and listed at the end (one bad file never stops a run), but a run where no
image can be read, or where the model predicts NaN/inf, is an AgiqaError rather than an empty
or partly empty table. Folders are searched with `core.io.find_images`, the same rule as the
`folder` dataset (hidden files and folders skipped).
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from agiqa_lib.core.checkpoints import parse_json_field, read_metadata
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import IMAGE_EXTENSIONS, find_images, open_rgb
from agiqa_lib.core.progress import progress_bar

# agiqa_model metadata value -> module providing load_scorer(checkpoint_path, device)
SCORER_MODULES = {
    "clip_agiqa": "agiqa_lib.clip_agiqa.model",
    "ma_agiqa": "agiqa_lib.ma_agiqa.model",
}
MAX_LISTED = 5


class Scorer(Protocol):
    """What a model family's `load_scorer` returns (`checkpoint`: the file it was loaded from)."""

    checkpoint: str

    def score_images(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass
class ScoreRun:
    """Scores of the readable images and the files that were skipped: (path, reason naming it)."""

    scores: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_scorer(checkpoint: str | os.PathLike, device: str = "cpu") -> Scorer:
    """Rebuild the model stored in `checkpoint` and return its scorer."""
    meta = read_metadata(checkpoint)
    family = meta.get("agiqa_model")
    if family not in SCORER_MODULES:
        raise AgiqaError(f"{checkpoint} does not say which model it holds (metadata "
                         f"agiqa_model={family!r}; expected one of {sorted(SCORER_MODULES)})")
    module = importlib.import_module(SCORER_MODULES[family])
    return module.load_scorer(checkpoint, device=device)


def check_batch_size(batch_size: int) -> None:
    """An AgiqaError unless `batch_size` is a whole number >= 1 (0 would score nothing)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AgiqaError(f"batch size must be a whole number of images >= 1, got {batch_size!r}; "
                         "pass e.g. --batch-size 16 (batch_size=16)")


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, see `core.io.find_images`) into image files.

    Files named explicitly are kept whatever their extension; an input that does not exist,
    or inputs that hold no image file at all, are an AgiqaError.
    """
    inputs = [Path(item) for item in inputs]
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found.extend(find_images(path))
        elif path.is_file():
            found.append(path)
        else:
            raise AgiqaError(f"{path} is neither an image file nor a folder")
    if not found:
        raise AgiqaError(f"no image files in {', '.join(map(str, inputs)) or 'the inputs'} "
                         f"(looked recursively for {', '.join(IMAGE_EXTENSIONS)}, any case; "
                         "hidden files and folders are skipped); pass images or their folder")
    return found


def score_images(scorer: Scorer, inputs: Iterable[str | os.PathLike],
                 batch_size: int = 16, progress: bool = True, warn: bool = True) -> ScoreRun:
    """Score every readable image under `inputs` in batches; skip (and record) bad files.

    With `warn`, skipped files are reported in one warning (the CLI prints them itself).
    No readable image at all, or a NaN/inf prediction, is an AgiqaError naming the files (and
    the checkpoint).
    """
    check_batch_size(batch_size)
    paths = collect_images(inputs)
    rows: list[tuple[str, float]] = []
    skipped: list[tuple[str, str]] = []
    bar = progress_bar(total=len(paths), desc="scoring", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch_paths, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(open_rgb(path))
                batch_paths.append(path)
            except AgiqaError as err:  # any decoder error: skip this file only
                skipped.append((str(path), str(err)))
        if images:
            scores = np.asarray(scorer.score_images(images), dtype=float).reshape(-1)
            rows.extend(zip(map(str, batch_paths), scores.tolist()))
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    if not rows:
        reason = skipped[0][1]
        raise AgiqaError(f"none of the {len(paths)} image file(s) could be read; the first: "
                         f"{reason}")
    table = pd.DataFrame(rows, columns=["path", "score"])
    _check_finite(table, getattr(scorer, "checkpoint", "") or "the model")
    if warn and skipped:
        shown = " ".join(reason for _, reason in skipped[:MAX_LISTED])
        more = f" (and {len(skipped) - MAX_LISTED} more)" if len(skipped) > MAX_LISTED else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s): {shown}{more}",
                      stacklevel=2)
    return ScoreRun(table, skipped)


def _check_finite(table: pd.DataFrame, checkpoint: str) -> None:
    """An AgiqaError when any score is NaN/inf: such a table would look like a result."""
    bad = table.loc[~np.isfinite(table["score"].to_numpy()), "path"]
    if len(bad):
        raise AgiqaError(f"checkpoint {checkpoint} predicted NaN/inf for {len(bad)} of "
                         f"{len(table)} image(s) (first: {bad.iloc[0]}), so its scores cannot be "
                         "trusted; retrain it or use another checkpoint")


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
        meta = read_metadata(checkpoint)
        run = score_images(load_scorer(checkpoint, device=device), frame["path"].tolist())
        scored = frame.merge(run.scores, on="path")
        metrics = evaluate(scored["score"].to_numpy(), scored["mos"].to_numpy(),
                           groups=scored["generator"].to_numpy() if "generator" in scored else None)
        rows.append({"checkpoint": Path(checkpoint).name, "model": meta.get("agiqa_model"),
                     "trained_on": parse_json_field(meta, "extra", checkpoint, default={}).get(
                         "dataset", meta.get("dataset")),
                     "tested_on": dataset, **metrics})
    return pd.DataFrame(rows)
