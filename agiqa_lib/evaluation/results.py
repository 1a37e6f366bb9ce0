"""The machine-readable results file: one JSON record per line, one line per evaluated run.

Notebooks 02 and 04 append records; notebook 05 reads them all. A record names the model,
dataset, split protocol, seed, profile and selection rule, and carries the metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from agiqa_lib.core.io import atomic_path

REQUIRED_KEYS = ("model", "dataset", "protocol", "seed", "profile", "selection",
                 "srcc", "plcc", "krcc", "rmse", "n")


def default_results_path() -> Path:
    """`$AGIQA_RESULTS` when set, else `outputs/results.jsonl` under the working directory."""
    return Path(os.environ.get("AGIQA_RESULTS", "outputs/results.jsonl"))


def append_result(record: dict[str, Any], path: str | os.PathLike | None = None) -> None:
    """Append one record (must hold every key of REQUIRED_KEYS) to the results file.

    A record with the same identity (model, dataset, protocol, seed, profile, selection,
    variant) replaces the earlier one, so re-running a notebook does not duplicate rows.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"result record lacks keys {missing}")
    path = Path(path) if path is not None else default_results_path()
    records = load_results_records(path)
    key = _identity(record)
    records = [r for r in records if _identity(r) != key] + [record]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, default=_jsonable) + "\n" for r in records))


def save_predictions(predictions: pd.DataFrame, record: dict[str, Any],
                     out_dir: str | os.PathLike) -> Path:
    """Write one run's per-image predictions (name, generator, mos, pred) beside the results.

    The file name follows the record's identity; the path is stored in
    `record["predictions"]` so notebook 05 can draw scatter plots and per-generator errors.
    """
    needed = {"name", "mos", "pred"}
    if not needed.issubset(predictions.columns):
        raise ValueError(f"predictions need columns {sorted(needed)}")
    stem = "_".join(str(v) for v in _identity(record) if v not in ("None", ""))
    path = Path(out_dir) / "predictions" / f"{stem.replace('/', '-')}.csv"
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False)
    record["predictions"] = str(path)
    return path


def load_results_records(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """All records in the results file (empty list when it does not exist)."""
    path = Path(path) if path is not None else default_results_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The results file as a DataFrame, one row per record."""
    return pd.DataFrame(load_results_records(path))


def _identity(record: dict[str, Any]) -> tuple:
    return tuple(str(record.get(k)) for k in
                 ("model", "variant", "dataset", "protocol", "seed", "profile", "selection",
                  "evaluation"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
