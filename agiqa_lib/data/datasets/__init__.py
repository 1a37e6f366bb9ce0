"""Dataset loaders: every dataset becomes one pandas DataFrame with the same leading columns.

`load_dataset(name, root)` returns `name`, `path` (absolute image path), `mos` (the chosen
target), `prompt` and `generator` ("" where a dataset has none), `prompt_id` / `official_split`
where the dataset defines them, then the dataset's own score columns, unchanged. Each loader
reads its dataset's official release format; see the module of each dataset for the layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from agiqa_lib.data.datasets import agiqa3k, aigciqa2023, aigiqa20k, demo, folder, koniq10k, spaq
from agiqa_lib.data.datasets.demo import make_demo_dataset
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.paths import shared_agiqa3k_root

__all__ = ["DATASET_NAMES", "load_dataset", "make_demo_dataset", "dataset_targets"]

LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "agiqa3k": agiqa3k.load,
    "aigciqa2023": aigciqa2023.load,
    "aigiqa20k": aigiqa20k.load,
    "koniq10k": koniq10k.load,
    "spaq": spaq.load,
    "demo": demo.load,
    "folder": folder.load,
}
DATASET_NAMES: tuple[str, ...] = tuple(LOADERS)

_TARGETS: dict[str, tuple[str, list[str]]] = {
    "agiqa3k": (agiqa3k.DEFAULT_TARGET, ["mos_quality", "mos_align"]),
    "demo": (agiqa3k.DEFAULT_TARGET, ["mos_quality", "mos_align"]),
    "aigciqa2023": (aigciqa2023.DEFAULT_TARGET, list(aigciqa2023.ASPECTS)),
    "aigiqa20k": (aigiqa20k.DEFAULT_TARGET, ["mos"]),
    "koniq10k": ("mos", ["mos", "mos_zscore"]),
    "spaq": (spaq.DEFAULT_TARGET, list(spaq.TARGETS)),
    "folder": ("", []),
}


def dataset_targets(name: str) -> tuple[str, list[str]]:
    """(default target, all targets) accepted by `load_dataset(name, target=...)`."""
    _check_name(name)
    return _TARGETS[name]


def load_dataset(name: str, root: str | Path | None = None, target: str | None = None,
                 check_files: bool = True) -> pd.DataFrame:
    """Load dataset `name` from `root` as a DataFrame (see the module docstring for columns).

    `root=None` is allowed for `demo` (generated into the cache on first use) and `agiqa3k`
    (the shared copy at ../shared/data/AGIQA-3K or $AGIQA3K_ROOT). `check_files=False` skips
    the check that every image exists, for scores-only analyses.
    """
    _check_name(name)
    if name == "agiqa3k" and root is None:
        root = shared_agiqa3k_root()
    return LOADERS[name](root, target=target, check_files=check_files)


def _check_name(name: str) -> None:
    """Raise an AgiqaError listing the valid names when `name` is not one of them."""
    if name not in LOADERS:
        raise AgiqaError(f"unknown dataset '{name}'; valid names: {', '.join(DATASET_NAMES)}")
