"""Shared checks for the dataset loaders: find files, read score tables, validate, pick the target.

Every problem the user can fix (wrong folder, missing file, unreadable or ragged table, bad
column, missing images) raises `AgiqaError` with one message naming the file (and line) and
what was expected. Doubtful but usable data (scores outside the dataset's documented range,
image names listed twice) gives a warning with counts. Every score table (CSV or Excel) is read
by `read_table`.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from agiqa_lib.core.errors import AgiqaError

EXCEL_SUFFIXES = (".xlsx", ".xls")
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


def read_table(path: Path, columns: Sequence[str] = (), header: int | None = 0,
               text: bool = False) -> pd.DataFrame:
    """Read a score table (CSV, or an Excel sheet for .xlsx/.xls) through one set of checks.

    CSV files must be UTF-8 (a BOM is allowed; any line endings). Other encodings are refused
    rather than guessed: Latin-1 and Windows-1252 read the same bytes differently, and a
    mis-decoded prompt would silently change prompt groups. Every row must have as many fields
    as the first (a ragged row is named by its line; pandas would otherwise shift the columns
    or stop with a tokenizer error). An empty file, a table without data rows and, with
    `header=0`, missing `columns` are AgiqaErrors naming the file. `text=True` keeps every cell
    as a string ("" for empty cells); otherwise pandas infers numbers and empty cells are NaN.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AgiqaError(f"cannot read score file '{path}' ({err}); check its permissions") from None
    expected = f" with the columns {','.join(columns)}" if columns else ""
    if not data:
        raise AgiqaError(f"score file '{path}' is empty (0 bytes); expected a table{expected}, "
                         "so re-download or re-export it")
    if path.suffix.lower() in EXCEL_SUFFIXES:
        df = _read_excel(path, data, header, text)
    else:
        df = _read_csv(path, data, header, text, expected)
    if df.shape[1] == 0:
        raise AgiqaError(f"score file '{path}' holds no table; expected a header row{expected} "
                         "and one row per image")
    if header is not None:
        require_columns(df, columns, path)
    if df.empty:
        raise AgiqaError(f"score file '{path}' has no data rows (only a header); expected one row "
                         "per image")
    return df


def _read_csv(path: Path, data: bytes, header: int | None, text: bool,
              expected: str) -> pd.DataFrame:
    """CSV bytes `data` (read from `path`) as a DataFrame after checking encoding, quoting and
    row widths."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise AgiqaError(f"score file '{path}' is not UTF-8 text: byte 0x{data[err.start]:02X} on "
                         f"line {line} cannot be decoded (the file may be Latin-1 or "
                         "Windows-1252), so re-save it as UTF-8 (in a spreadsheet: 'CSV UTF-8')"
                         ) from None
    records = _csv_records(content, path)
    if not records:
        raise AgiqaError(f"score file '{path}' is empty (blank lines only); expected a header "
                         f"row{expected} and one row per image")
    first_line, first = records[0]
    for line, fields in records[1:]:
        if len(fields) != len(first):
            what = "the header" if header is not None else "the first row"
            raise AgiqaError(f"score file '{path}' line {line} has {len(fields)} fields but {what} "
                             f"(line {first_line}) has {len(first)}{expected}; put text that "
                             "contains commas in double quotes or fix the row")
    options = {"dtype": str} if text else {"na_values": [""]}
    try:
        return pd.read_csv(io.StringIO(content), header=header, keep_default_na=False, **options)
    except (ValueError, pd.errors.ParserError) as err:
        raise AgiqaError(f"could not parse score file '{path}' ({err}); expected a "
                         f"comma-separated table{expected}") from None


def _csv_records(content: str, path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, fields) of every CSV record; bad quoting is an AgiqaError.

    Lines holding only whitespace are skipped, as pandas skips them.
    """
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    records, line = [], 1
    try:
        for fields in reader:
            if len(fields) > 1 or (fields and fields[0].strip()):
                records.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as err:
        raise AgiqaError(f"score file '{path}' has broken quoting in the record starting on line "
                         f"{line} ({err}); every double quote that opens a field must close it, "
                         "so fix or remove that quote") from None
    return records


def _read_excel(path: Path, data: bytes, header: int | None, text: bool) -> pd.DataFrame:
    """The first sheet of Excel bytes `data` (read from `path`); an AgiqaError when they are not
    a readable workbook."""
    options = {"dtype": str} if text else {"na_values": [""]}
    try:
        return pd.read_excel(io.BytesIO(data), header=header, keep_default_na=False, **options)
    except ImportError as err:
        raise AgiqaError(f"reading the Excel file '{path}' needs a package that is missing "
                         f"({err}); install openpyxl or export the sheet as UTF-8 CSV") from None
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
        raise AgiqaError(f"score sheet '{path}' is not a readable Excel workbook ({err}); "
                         "re-download it or re-save it as .xlsx") from None


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
                         f"missing from {where} ({len(paths) - len(missing)} found; first missing: "
                         f"{shown}); check the images folder or pass check_files=False for a "
                         "scores-only analysis")


def check_scores(df: pd.DataFrame, ranges: Mapping[str, tuple[float, float]], source: str,
                 dataset: str, name_column: str = "name") -> None:
    """Warn, with counts and a few names, about doubtful but usable scores.

    A value outside its column's documented range (`ranges`: column -> (low, high), from the
    dataset's paper) suggests a rescaled or mislabelled file; an image name listed more than
    once would put one image in several rows (and possibly in train and test). Empty values are
    not checked here (`numeric_column` refuses them where they matter).
    """
    names = df[name_column].astype(str)
    for column, (low, high) in ranges.items():
        if column not in df.columns:
            continue
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        outside = np.flatnonzero((values < low) | (values > high))
        if len(outside):
            shown = ", ".join(f"{names.iloc[i]}: {values[i]:g}" for i in outside[:MAX_LISTED])
            warnings.warn(f"{source}: {len(outside)} of {len(values)} value(s) of '{column}' lie "
                          f"outside {dataset}'s documented range {low:g}-{high:g} (e.g. {shown}); "
                          "check that the file belongs to this dataset and was not rescaled",
                          stacklevel=2)
    repeated = names[names.duplicated(keep=False)]
    if len(repeated):
        shown = ", ".join(f"{name} x{count}" for name, count
                          in repeated.value_counts(sort=False).head(MAX_LISTED).items())
        warnings.warn(f"{source} lists {repeated.nunique()} image name(s) more than once "
                      f"({len(repeated)} rows; e.g. {shown}); each copy is kept as its own row, "
                      "so remove the duplicates unless they are intended", stacklevel=2)


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
