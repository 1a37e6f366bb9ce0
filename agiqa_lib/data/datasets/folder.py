"""Any folder of images (searched recursively), without scores: for scoring new images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agiqa_lib.data.datasets._common import IMAGE_EXTENSIONS, finish, require_root
from agiqa_lib.core.errors import AgiqaError


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Every image under `root` (png/jpg/jpeg/webp/bmp/tif, any case), sorted; `mos` is NaN."""
    root = require_root(root, "folder", "image files")
    if target is not None:
        raise AgiqaError(f"dataset 'folder' has no scores, so target '{target}' cannot be "
                         f"chosen; leave target unset")
    paths = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise AgiqaError(f"no images found under '{root}' (looked recursively for "
                         f"{', '.join(IMAGE_EXTENSIONS)}, any case)")
    df = pd.DataFrame({"name": [p.relative_to(root).as_posix() for p in paths],
                       "path": [str(p) for p in paths]})
    df["mos"] = np.nan
    return finish(df, "mos")
