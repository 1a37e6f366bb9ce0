"""AIGCIQA2023 (Wang et al., 2023): 2,400 images, 6 generators x 100 prompts x 4 images.

Official release: `DATA/MOS/mosz1.mat`, `mosz2.mat`, `mosz3.mat` (key `MOSz`, 2400x1: quality,
authenticity, correspondence; a ~25-75 z-score scale), `DATA/STD/SD1.mat`..`SD3.mat` (key `SD`,
same order; optional here), images `Image/allimg/{i}.png`. Image i comes from generator
`i // 400` in the order below and shows prompt `(i % 400) // 4`. Prompt texts come from
`AIGCIQA2023_Prompts.xlsx` (distributed beside `DATA/`, no header row, prompt in the third
column) when present. Scores outside 0-100 give a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from agiqa_lib.data.datasets._common import (check_images, check_scores, find_file,
                                             find_optional, finish, read_table, require_root,
                                             resolve_target)
from agiqa_lib.core.errors import AgiqaError

N_IMAGES = 2400
N_PROMPTS = 100
IMAGES_PER_PROMPT = 4
GENERATORS = ["Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser"]
ASPECTS = ["quality", "authenticity", "correspondence"]
TARGETS = {aspect: f"mos_{aspect}" for aspect in ASPECTS} | {"align": "mos_correspondence"}
DEFAULT_TARGET = "quality"
MOS_RANGE = (0.0, 100.0)  # MOSz: z-scores rescaled to 0-100 (observed ~25-75)
PROMPT_FILES = ["AIGCIQA2023_Prompts.xlsx", "DATA/AIGCIQA2023_Prompts.xlsx",
                "DATA/MOS/AIGCIQA2023_Prompts.xlsx", "AIGCIQA2023_Prompts.csv",
                "DATA/AIGCIQA2023_Prompts.csv", "DATA/MOS/AIGCIQA2023_Prompts.csv"]


def read_mat_vector(path: Path, key: str) -> np.ndarray:
    """The 2400 values stored under `key` in a MATLAB file; AgiqaError if absent or misshaped."""
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError, scipy.io.matlab.MatReadError) as err:
        raise AgiqaError(f"could not read MATLAB file '{path}' ({err}); expected the official "
                         f"MATLAB v5 file with a 2400x1 variable '{key}', so re-download it"
                         ) from None
    if key not in mat:
        found = [k for k in mat if not k.startswith("__")]
        raise AgiqaError(f"MATLAB file '{path}' has no variable '{key}' (found {found})")
    values = np.asarray(mat[key], dtype=float).reshape(-1)
    if values.size != N_IMAGES:
        raise AgiqaError(f"'{key}' in '{path}' holds {values.size} values; expected a "
                         f"{N_IMAGES}x1 array")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise AgiqaError(f"'{key}' in '{path}' has {len(bad)} non-numeric value(s) at image "
                         f"indices {bad[:5].tolist()}")
    return values


def read_prompts(path: Path) -> list[str]:
    """The 100 prompt texts, in prompt-index order, from the prompts spreadsheet or CSV."""
    table = read_table(path, header=None)
    first_row = [str(v).strip().lower() for v in table.iloc[0]] if len(table) else []
    if "prompt" in first_row:
        table = table.iloc[1:].reset_index(drop=True)
        column = first_row.index("prompt")
    else:
        column = 2 if table.shape[1] >= 3 else 0
    prompts = table.iloc[:, column].fillna("").astype(str).str.strip().tolist()
    if len(prompts) != N_PROMPTS:
        raise AgiqaError(f"prompt file '{path}' has {len(prompts)} prompts; expected "
                         f"{N_PROMPTS} (one per row, prompt text in the third column)")
    return prompts


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Read the official AIGCIQA2023 release into the common frame."""
    root = require_root(root, "aigciqa2023", "DATA/MOS/mosz1.mat and Image/allimg/")
    target_column = resolve_target("aigciqa2023", target, TARGETS, DEFAULT_TARGET)
    index = np.arange(N_IMAGES)
    df = pd.DataFrame({"name": [f"{i}.png" for i in index]})
    df["path"] = [str(root / "Image" / "allimg" / name) for name in df["name"]]
    df["generator"] = [GENERATORS[i // (N_IMAGES // len(GENERATORS))] for i in index]
    df["prompt_id"] = (index % (N_PROMPTS * IMAGES_PER_PROMPT)) // IMAGES_PER_PROMPT
    prompt_file = find_optional(root, PROMPT_FILES)
    if prompt_file is not None:
        df["prompt"] = np.asarray(read_prompts(prompt_file), dtype=object)[df["prompt_id"]]

    for k, aspect in enumerate(ASPECTS, start=1):
        mos_file = find_file(root, [f"DATA/MOS/mosz{k}.mat"], "aigciqa2023", f"{aspect} MOS file")
        df[f"mos_{aspect}"] = read_mat_vector(mos_file, "MOSz")
    for k, aspect in enumerate(ASPECTS, start=1):
        std_file = find_optional(root, [f"DATA/STD/SD{k}.mat"])
        if std_file is not None:
            df[f"std_{aspect}"] = read_mat_vector(std_file, "SD")
    check_scores(df, {f"mos_{aspect}": MOS_RANGE for aspect in ASPECTS},
                 f"MOS files under '{root / 'DATA' / 'MOS'}'", "AIGCIQA2023")

    if check_files:
        check_images(df["path"], f"'{root / 'Image' / 'allimg'}'")
    return finish(df, target_column)
