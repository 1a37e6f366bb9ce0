"""AIGIQA-20K (Li et al., 2024; the NTIRE 2024 AIGCQA-30K-Image release).

Official release: `info_train.csv` (or `.xlsx`) and, when present, `info_val` / `info_test`,
columns `name,prompt,mos` (MOS 0-5); images in `train/`, `val/`, `test/` named
`{Generator}_{NNNN}.png`. The split a row comes from is kept as `official_split`. A val/test
sheet without MOS values (labels withheld, as during the challenge) gives NaN MOS. MOS outside
0-5, or a name listed twice in one sheet, gives a warning; a name in two sheets is an error
(the official splits would share an image).

`ma_agiqa_pool` is True for the rows of the training sheet: MA-AGIQA's released split reads
`info_train.csv` only (wangpuyi/MA-AGIQA `utils/process.py:90-122`, `dataset_general` with
`csv_file = 'info_train.csv'`), so `make_split(df, "ma_agiqa")` shuffles those 14,000 rows
(seed 20 -> 9,800/1,400/2,800) whatever else the folder holds; `official` keeps the challenge's
partition, and rows without a score never enter a part (`agiqa_lib.data.splits`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agiqa_lib.data.datasets._common import (check_images, check_scores, find_file,
                                             find_optional, finish, numeric_column, read_table,
                                             require_root, resolve_target)
from agiqa_lib.core.errors import AgiqaError

SPLITS = ["train", "val", "test"]
TARGETS = {"mos": "mos", "quality": "mos"}
DEFAULT_TARGET = "mos"
MOS_RANGE = (0.0, 5.0)


def info_candidates(split: str) -> list[str]:
    """File names the score sheet of one split may have."""
    return [f"info_{split}.csv", f"info_{split}.xlsx"]


def read_split(root: Path, split: str, path: Path) -> pd.DataFrame:
    """One split's score sheet with `path`, `generator` and `official_split` added."""
    df = read_table(path, ["name", "prompt"] + (["mos"] if split == "train" else []))
    df["name"] = df["name"].astype(str).str.strip()
    if "mos" in df.columns and (split == "train" or df["mos"].notna().any()):
        df["mos"] = numeric_column(df, "mos", path, "name")
    else:
        df["mos"] = np.nan
    check_scores(df, {"mos": MOS_RANGE}, f"score sheet '{path}'", "AIGIQA-20K")
    df["path"] = [str(root / name) if "/" in name else str(root / split / name)
                  for name in df["name"]]
    stems = df["name"].map(lambda n: Path(n).stem)
    df["generator"] = stems.str.replace(r"_\d+$", "", regex=True)
    df["official_split"] = split
    return df


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Read the official AIGIQA-20K release (all splits present) into the common frame."""
    root = require_root(root, "aigiqa20k", "info_train.csv (or .xlsx) and train/")
    target_column = resolve_target("aigiqa20k", target, TARGETS, DEFAULT_TARGET)
    parts = [read_split(root, "train", find_file(root, info_candidates("train"), "aigiqa20k",
                                                 "training score sheet"))]
    for split in SPLITS[1:]:
        path = find_optional(root, info_candidates(split))
        if path is not None:
            parts.append(read_split(root, split, path))
    df = pd.concat(parts, ignore_index=True)
    sheets_per_name = df.groupby("name", sort=False)["official_split"].nunique()
    shared = sheets_per_name.index[sheets_per_name > 1]
    if len(shared):
        raise AgiqaError(f"{len(shared)} image name(s) appear in more than one AIGIQA-20K score "
                         f"sheet under '{root}' (first: {shared[0]}); the official splits must not "
                         "share images, so remove the duplicates")
    if check_files:
        check_images(df["path"], f"'{root}' (train/, val/, test/)")
    df["ma_agiqa_pool"] = df["official_split"] == "train"
    return finish(df, target_column)
