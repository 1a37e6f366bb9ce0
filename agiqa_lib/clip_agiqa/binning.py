"""Quality classes for CLIP-AGIQA's prompts: MOS bins named terrible ... perfect.

The released CLIP-AGIQA code labels each training image with one of six quality words by
cutting the MOS scale at five points. For AGIQA-3K it hard-codes 1.231/2.266/2.749/3.092/3.456
(the sextiles of the training MOS under its 80/20 split, to within 0.002); for AIGCIQA2023
fixed cut-points 30/40/50/60/70. The labels only name the six prompts ("X X ... X good.");
the loss is MSE on the raw MOS, so the cut-points never enter the gradient.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from agiqa_lib.core.errors import AgiqaError

QUALITY_CLASSES = ("terrible", "bad", "poor", "average", "good", "perfect")

# Cut-points hard-coded in the released code (datasets/AGIQA.py, datasets/AIGCIQA2023.py).
RELEASED_CUTPOINTS: dict[str, tuple[float, ...]] = {
    "agiqa3k": (1.231, 2.266, 2.749, 3.092, 3.456),
    "aigciqa2023": (30.0, 40.0, 50.0, 60.0, 70.0),
}

BINNING_RULES = ("quantiles", "released")


def quantile_cutpoints(train_mos: Sequence[float], n_classes: int = len(QUALITY_CLASSES)) -> np.ndarray:
    """Cut-points splitting the training MOS into `n_classes` equal-count bins (sextiles for 6)."""
    mos = np.asarray(train_mos, dtype=float)
    if mos.size < n_classes or np.isnan(mos).any():
        raise AgiqaError(f"quantile binning needs at least {n_classes} finite training MOS values "
                         f"(got {mos.size}); pass fixed cut-points instead")
    return np.quantile(mos, np.arange(1, n_classes) / n_classes)


def resolve_cutpoints(binning: str | Sequence[float], train_mos: Sequence[float] | None = None,
                      dataset: str | None = None, n_classes: int = len(QUALITY_CLASSES)) -> np.ndarray:
    """Turn a binning rule into `n_classes - 1` increasing cut-points.

    `binning` is "quantiles" (equal-count bins of `train_mos`), "released" (the cut-points
    the released code hard-codes for `dataset`), or an explicit increasing sequence.
    """
    if isinstance(binning, str):
        if binning == "quantiles":
            if train_mos is None:
                raise AgiqaError("binning='quantiles' needs the training MOS values")
            return quantile_cutpoints(train_mos, n_classes)
        if binning == "released":
            if dataset not in RELEASED_CUTPOINTS:
                raise AgiqaError(f"the released code fixes cut-points only for "
                                 f"{sorted(RELEASED_CUTPOINTS)}, not {dataset!r}; use "
                                 "binning='quantiles' or pass explicit cut-points")
            cuts = np.asarray(RELEASED_CUTPOINTS[dataset], dtype=float)
        else:
            raise AgiqaError(f"unknown binning {binning!r}: use one of {BINNING_RULES} "
                             "or a sequence of cut-points")
    else:
        cuts = np.asarray(list(binning), dtype=float)
    if cuts.shape != (n_classes - 1,) or not np.all(np.diff(cuts) > 0):
        raise AgiqaError(f"binning needs {n_classes - 1} strictly increasing cut-points, got "
                         f"{cuts.tolist()}")
    return cuts


def assign_classes(mos: Sequence[float], cutpoints: Sequence[float]) -> np.ndarray:
    """Class index of each MOS: bin k holds cut[k-1] <= mos < cut[k], as the released code."""
    return np.searchsorted(np.asarray(cutpoints, dtype=float), np.asarray(mos, dtype=float),
                           side="right")
