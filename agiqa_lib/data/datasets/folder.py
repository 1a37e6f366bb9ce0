"""Any folder of images (searched recursively), without scores: for scoring new images.

Which files count as images is `core.io.find_images`, the same rule `agiqa score` uses
(extensions in any case; hidden files and folders skipped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import IMAGE_EXTENSIONS, find_images
from agiqa_lib.data.datasets._common import finish, require_root


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """Every image under `root` (see `core.io.find_images`), sorted; `mos` is NaN."""
    root = require_root(root, "folder", "image files")
    if target is not None:
        raise AgiqaError(f"dataset 'folder' has no scores, so target '{target}' cannot be "
                         f"chosen; leave target unset")
    paths = find_images(root)
    if not paths:
        raise AgiqaError(f"no images found under '{root}' (looked recursively for "
                         f"{', '.join(IMAGE_EXTENSIONS)}, any case; hidden files and folders "
                         "are skipped)")
    df = pd.DataFrame({"name": [p.relative_to(root).as_posix() for p in paths],
                       "path": [str(p) for p in paths]})
    df["mos"] = np.nan
    return finish(df, "mos")
