"""AGIQA-3K (Li et al., 2023): `data.csv` + 2,982 JPEGs from 10 generator settings.

Official release: `data.csv` (CRLF line endings) with columns
`name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align` and the images, named
`{generator}_{NNN}.jpg` (e.g. `sd1.5_lowstep_042.jpg`), beside it or in one subfolder
(`images/` in most copies). MOS are on a 0-5 scale (quality and alignment; values outside give
a warning, as do image names listed twice).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from agiqa_lib.data.datasets._common import (check_images, check_scores, find_file, finish,
                                             numeric_column, read_table, require_root,
                                             resolve_target)
from agiqa_lib.core.errors import AgiqaError

SCORE_FILE = "data.csv"
COLUMNS = ["name", "prompt", "adj1", "adj2", "style",
           "mos_quality", "std_quality", "mos_align", "std_align"]
TARGETS = {"mos_quality": "mos_quality", "quality": "mos_quality",
           "mos_align": "mos_align", "align": "mos_align", "alignment": "mos_align"}
DEFAULT_TARGET = "mos_quality"
GENERATOR_PATTERN = r"_\d+\.[A-Za-z]+$"
MOS_RANGES = {"mos_quality": (0.0, 5.0), "mos_align": (0.0, 5.0)}


def generator_of(name: pd.Series) -> pd.Series:
    """Generator setting of each image: the file name without its trailing `_NNN.jpg`."""
    return name.str.replace(GENERATOR_PATTERN, "", regex=True)


def find_image_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The folder holding most of the listed images (None when none holds any).

    Looks in root itself, `images/` and the other direct (non-hidden) subfolders; ties go to
    that order. Counting all names (not only the first) means one missing image never hides
    the folder that holds the others.
    """
    subfolders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: (p.name != "images", p.name))
    wanted = set(names)
    best, best_count = None, 0
    for folder in [root, *subfolders]:
        try:
            count = len(wanted.intersection(os.listdir(folder)))
        except OSError:  # an unreadable subfolder cannot hold the images we can use
            continue
        if count > best_count:
            best, best_count = folder, count
    return best


def load(root: str | Path | None, target: str | None = None, check_files: bool = True,
         dataset: str = "agiqa3k") -> pd.DataFrame:
    """Read an AGIQA-3K style folder (`data.csv` + images) into the common frame."""
    root = require_root(root, dataset, f"{SCORE_FILE} and the images")
    target_column = resolve_target(dataset, target, TARGETS, DEFAULT_TARGET)
    score_file = find_file(root, [SCORE_FILE], dataset, "score file")
    df = read_table(score_file, COLUMNS, text=True)
    for column in ("mos_quality", "std_quality", "mos_align", "std_align"):
        df[column] = numeric_column(df, column, score_file, "name")
    check_scores(df, MOS_RANGES, f"score file '{score_file}'", "AGIQA-3K")

    image_dir = find_image_dir(root, df["name"].tolist())
    if image_dir is None:
        if check_files:
            raise AgiqaError(f"none of the {len(df)} images listed in '{score_file}' (first: "
                             f"{df['name'].iloc[0]}) was found in '{root}' or any of its "
                             f"subfolders (e.g. '{root / 'images'}'); put the images there or "
                             "pass check_files=False for scores only")
        image_dir = root / "images" if (root / "images").is_dir() else root
    df["path"] = [str(image_dir / name) for name in df["name"]]
    if check_files:
        check_images(df["path"], f"'{image_dir}'")
    df["generator"] = generator_of(df["name"])
    return finish(df, target_column)
