"""Shared checks for the dataset loaders: find files, read score tables, validate, pick the target.

Every problem the user can fix (wrong folder, missing file, bad column, missing images) raises
`AgiqaError` with one message naming the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from agiqa_lib.core.errors import AgiqaError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
LEADING_COLUMNS = ["name", "path", "mos", "prompt", "generator", "prompt_id", "official_split"]
MAX_LISTED = 5


def require_root(root: str | Path | None, dataset: str, expected: str) -> Path:
    """The dataset folder as an absolute Path; an AgiqaError when it is missing or not a folder."""
    if root is None:
        raise AgiqaError(f"dataset '{dataset}' needs a root folder (pass root=... / --root); "
                         f"it should contain {expected}")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise AgiqaError(f"dataset root '{path}' for '{dataset}' is not an existing folder; "
                         f"it should contain {expected}")
    return path


def find_file(root: Path, candidates: Sequence[str], dataset: str, what: str) -> Path:
    """The first of `candidates` (paths relative to root) that exists, else an AgiqaError listing them."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    looked = ", ".join(str(root / rel) for rel in candidates)
    raise AgiqaError(f"no {what} for '{dataset}' under '{root}' (looked for: {looked}); "
                     f"check that root points at the dataset's top folder")


def find_optional(root: Path, candidates: Sequence[str]) -> Path | None:
    """The first of `candidates` (paths relative to root) that exists, or None."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    return None


def read_table(path: Path, header: int | None = 0) -> pd.DataFrame:
    """Read a CSV (any line endings, optional BOM) or an Excel sheet into strings-or-numbers."""
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path, header=header, keep_default_na=False, na_values=[""])
        return pd.read_csv(path, header=header, encoding="utf-8-sig", keep_default_na=False,
                           na_values=[""], skipinitialspace=False)
    except (ValueError, OSError, pd.errors.ParserError, KeyError) as err:
        raise AgiqaError(f"could not read score file '{path}': {err}") from err


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise an AgiqaError naming the missing columns of the table read from `path`."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AgiqaError(f"score file '{path}' lacks column(s) {missing}; "
                         f"expected {list(columns)}, found {list(df.columns)}")


def numeric_column(df: pd.DataFrame, column: str, path: Path, name_column: str,
                   first_line: int = 2) -> pd.Series:
    """`df[column]` as floats; an AgiqaError naming the rows whose value is empty or not a number.

    `first_line` is the file line of the first data row (2 for a CSV/Excel sheet with a header).
    """
    values = pd.to_numeric(df[column], errors="coerce").astype(float)
    bad = np.flatnonzero(~np.isfinite(values.to_numpy()))
    if len(bad):
        shown = ", ".join(f"line {i + first_line} ({df[name_column].iloc[i]!s}: "
                          f"{_cell(df[column].iloc[i])})" for i in bad[:MAX_LISTED])
        raise AgiqaError(f"score file '{path}': column '{column}' must be numeric, but {len(bad)} "
                         f"row(s) are empty or not numbers: {shown}")
    return values


def _cell(value: object) -> str:
    """A table cell as shown in messages: 'empty' or the quoted text."""
    return "empty" if pd.isna(value) or str(value).strip() == "" else repr(str(value))


def check_images(paths: pd.Series, where: str) -> None:
    """Raise an AgiqaError saying how many image files are missing and naming the first few."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(Path(p).name for p in missing[:MAX_LISTED])
        raise AgiqaError(f"{len(missing)} of {len(paths)} images listed by the score file are "
                         f"missing from {where} (first: {shown}); check the images folder or pass "
                         f"check_files=False for a scores-only analysis")


def resolve_target(dataset: str, target: str | None, targets: dict[str, str], default: str) -> str:
    """The score column for `target` (aliases and case ignored); AgiqaError listing valid ones."""
    if target is None:
        return targets[default]
    key = target.lower()
    for alias, column in targets.items():
        if key in (alias.lower(), column.lower()):
            return column
    valid = sorted(set(targets))
    raise AgiqaError(f"unknown target '{target}' for dataset '{dataset}'; valid targets: {valid} "
                     f"(default '{default}')")


def finish(df: pd.DataFrame, target_column: str) -> pd.DataFrame:
    """Set `mos` from the target column, fill prompt/generator, order columns, reset the index."""
    df = df.copy()
    df["mos"] = df[target_column].astype(float)
    for column in ("prompt", "generator"):
        if column not in df.columns:
            df[column] = ""
        df[column] = df[column].fillna("").astype(str)
    df["name"] = df["name"].astype(str)
    df["path"] = df["path"].astype(str)
    leading = [c for c in LEADING_COLUMNS if c in df.columns]
    rest = [c for c in df.columns if c not in leading]
    return df[leading + rest].reset_index(drop=True)
