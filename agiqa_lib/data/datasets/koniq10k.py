"""KonIQ-10k (Hosu et al., 2020): 10,073 in-the-wild photos with crowd MOS.

Official release: `koniq10k_scores_and_distributions.csv`
(`image_name,c1..c5,c_total,MOS,SD,MOS_zscore`, MOS 1-5) and/or
`koniq10k_distributions_sets.csv` (`image_name,c1..c5,c_total,MOS,SD,set`, MOS 0-100, official
`training`/`validation`/`test` split in `set`); images in `1024x768/` or `512x384/`.
When both files are present the scores file gives the scores and the sets file the split.
MOS_zscore is on a 0-100 scale; values outside the documented ranges, and image names listed
twice, give a warning.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agiqa_lib.data.datasets._common import (check_images, check_scores, find_optional, finish,
                                             numeric_column, read_table, require_root,
                                             resolve_target)
from agiqa_lib.core.errors import AgiqaError

SCORES_FILE = "koniq10k_scores_and_distributions.csv"
SETS_FILE = "koniq10k_distributions_sets.csv"
COUNT_COLUMNS = ["c1", "c2", "c3", "c4", "c5", "c_total"]
IMAGE_DIRS = ["1024x768", "512x384"]
# documented score ranges by the file's extra column (scores file: MOS_zscore; sets file: set)
SCORE_RANGES = {"MOS_zscore": {"MOS": (1.0, 5.0), "MOS_zscore": (0.0, 100.0)},
                "set": {"MOS": (0.0, 100.0)}}
SET_NAMES = {"training": "train", "train": "train", "validation": "val", "val": "val",
             "test": "test"}


def read_scores(path: Path, extra: str) -> pd.DataFrame:
    """One KonIQ CSV with its numeric columns checked (`extra` is MOS_zscore or set)."""
    df = read_table(path, ["image_name", *COUNT_COLUMNS, "MOS", "SD", extra])
    for column in [*COUNT_COLUMNS, "MOS", "SD"] + (["MOS_zscore"] if extra == "MOS_zscore" else []):
        df[column] = numeric_column(df, column, path, "image_name")
    check_scores(df, SCORE_RANGES[extra], f"score file '{path}'", "KonIQ-10k", "image_name")
    return df


def official_split(sets: pd.DataFrame, path: Path) -> pd.Series:
    """The `set` column mapped to train/val/test; AgiqaError naming unknown values."""
    labels = sets["set"].astype(str).str.strip().str.lower()
    unknown = sorted(set(labels) - set(SET_NAMES))
    if unknown:
        raise AgiqaError(f"column 'set' of '{path}' has unknown value(s) {unknown}; expected "
                         f"training, validation or test")
    return labels.map(SET_NAMES)


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Read the official KonIQ-10k release into the common frame."""
    root = require_root(root, "koniq10k", f"{SCORES_FILE} or {SETS_FILE}")
    scores_path, sets_path = find_optional(root, [SCORES_FILE]), find_optional(root, [SETS_FILE])
    if scores_path is None and sets_path is None:
        raise AgiqaError(f"no KonIQ-10k score file under '{root}' (looked for "
                         f"{root / SCORES_FILE} and {root / SETS_FILE})")
    targets = {"mos": "MOS"} | ({"mos_zscore": "MOS_zscore"} if scores_path else {})
    target_column = resolve_target("koniq10k", target, targets, "mos")

    if scores_path is not None:
        df = read_scores(scores_path, "MOS_zscore")
        if sets_path is not None:
            sets = read_table(sets_path, ["image_name", "set"])
            split = dict(zip(sets["image_name"], official_split(sets, sets_path)))
            df["official_split"] = df["image_name"].map(split)
    else:
        df = read_scores(sets_path, "set")
        df["official_split"] = official_split(df, sets_path)
        df = df.drop(columns=["set"])

    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root / IMAGE_DIRS[0])
    df = df.rename(columns={"image_name": "name"})
    df["name"] = df["name"].astype(str)
    df["path"] = [str(image_dir / name) for name in df["name"]]
    if check_files:
        if not image_dir.is_dir():
            raise AgiqaError(f"no KonIQ-10k image folder under '{root}' (looked for "
                             f"{', '.join(str(root / d) for d in IMAGE_DIRS)})")
        check_images(df["path"], f"'{image_dir}'")
    return finish(df, target_column)
