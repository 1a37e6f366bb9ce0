"""SPAQ (Fang et al., 2020): 11,125 smartphone photos with MOS (0-100) and five attributes.

Official release: `Annotations/MOS and Image attribute scores.xlsx` (`Image name,MOS,
Brightness,Colorfulness,Contrast,Noisiness,Sharpness`) and images `TestImage/NNNNN.jpg`.
Any of the attribute columns can be chosen as the target instead of MOS. MOS and attributes
are on a 0-100 scale (values outside, and image names listed twice, give a warning).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agiqa_lib.data.datasets._common import (check_images, check_scores, find_file, finish,
                                             numeric_column, read_table, require_root,
                                             resolve_target)

SCORE_FILE = "Annotations/MOS and Image attribute scores.xlsx"
IMAGE_DIR = "TestImage"
SCORE_COLUMNS = ["MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
TARGETS = {column.lower(): column for column in SCORE_COLUMNS}
DEFAULT_TARGET = "mos"
SCORE_RANGE = (0.0, 100.0)


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Read the official SPAQ release into the common frame."""
    root = require_root(root, "spaq", f"'{SCORE_FILE}' and {IMAGE_DIR}/")
    target_column = resolve_target("spaq", target, TARGETS, DEFAULT_TARGET)
    score_file = find_file(root, [SCORE_FILE], "spaq", "score sheet")
    df = read_table(score_file, ["Image name", *SCORE_COLUMNS])
    for column in SCORE_COLUMNS:
        df[column] = numeric_column(df, column, score_file, "Image name")
    check_scores(df, dict.fromkeys(SCORE_COLUMNS, SCORE_RANGE), f"score sheet '{score_file}'",
                 "SPAQ", name_column="Image name")
    df = df.rename(columns={"Image name": "name"})
    df["name"] = df["name"].astype(str).str.strip()
    df["path"] = [str(root / IMAGE_DIR / name) for name in df["name"]]
    if check_files:
        check_images(df["path"], f"'{root / IMAGE_DIR}'")
    return finish(df, target_column)
