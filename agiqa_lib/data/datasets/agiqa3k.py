"""AGIQA-3K (Li et al., 2023): `data.csv` + 2,982 JPEGs from 10 generator settings.

Official release: `data.csv` (CRLF line endings) with columns
`name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align` and the images, named
`{generator}_{NNN}.jpg` (e.g. `sd1.5_lowstep_042.jpg`), beside it or in one subfolder
(`images/` in most copies). MOS are on a 0-5 scale.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agiqa_lib.data.datasets._common import (check_images, find_file, finish, numeric_column,
                                        require_columns, require_root, resolve_target)
from agiqa_lib.core.errors import AgiqaError

SCORE_FILE = "data.csv"
COLUMNS = ["name", "prompt", "adj1", "adj2", "style",
           "mos_quality", "std_quality", "mos_align", "std_align"]
TARGETS = {"mos_quality": "mos_quality", "quality": "mos_quality",
           "mos_align": "mos_align", "align": "mos_align", "alignment": "mos_align"}
DEFAULT_TARGET = "mos_quality"
GENERATOR_PATTERN = r"_\d+\.[A-Za-z]+$"


def generator_of(name: pd.Series) -> pd.Series:
    """Generator setting of each image: the file name without its trailing `_NNN.jpg`."""
    return name.str.replace(GENERATOR_PATTERN, "", regex=True)


def find_image_dir(root: Path, first_name: str) -> Path | None:
    """The folder holding the images: root itself, `images/`, or another direct subfolder."""
    subfolders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: (p.name != "images", p.name))
    for folder in [root, *subfolders]:
        if (folder / first_name).is_file():
            return folder
    return None


def load(root: str | Path | None, target: str | None = None, check_files: bool = True,
         dataset: str = "agiqa3k") -> pd.DataFrame:
    """Read an AGIQA-3K style folder (`data.csv` + images) into the common frame."""
    root = require_root(root, dataset, f"{SCORE_FILE} and the images")
    target_column = resolve_target(dataset, target, TARGETS, DEFAULT_TARGET)
    score_file = find_file(root, [SCORE_FILE], dataset, "score file")
    df = pd.read_csv(score_file, encoding="utf-8-sig", keep_default_na=False, dtype=str)
    require_columns(df, COLUMNS, score_file)
    if df.empty:
        raise AgiqaError(f"score file '{score_file}' has no rows")
    for column in ("mos_quality", "std_quality", "mos_align", "std_align"):
        df[column] = numeric_column(df, column, score_file, "name")

    image_dir = find_image_dir(root, df["name"].iloc[0])
    if image_dir is None:
        if check_files:
            raise AgiqaError(f"images listed in '{score_file}' (first: {df['name'].iloc[0]}) were "
                             f"found neither in '{root}' nor in any of its subfolders (e.g. "
                             f"'{root / 'images'}'); pass check_files=False for scores only")
        image_dir = root / "images" if (root / "images").is_dir() else root
    df["path"] = [str(image_dir / name) for name in df["name"]]
    if check_files:
        check_images(df["path"], f"'{image_dir}'")
    df["generator"] = generator_of(df["name"])
    return finish(df, target_column)
