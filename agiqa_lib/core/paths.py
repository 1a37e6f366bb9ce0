"""Where the study keeps generated data, caches and outputs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root folder for generated data and feature caches.

    `$AGIQA_CACHE_DIR` when set, else `~/.cache/agiqa-study`. Created on first use.
    """
    root = Path(os.environ.get("AGIQA_CACHE_DIR", Path.home() / ".cache" / "agiqa-study"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def shared_agiqa3k_root() -> Path | None:
    """The real AGIQA-3K copy beside the repository (`../shared/data/AGIQA-3K`), if present.

    `$AGIQA3K_ROOT` overrides the location. Used by tests and CI to run real-data checks.
    """
    env = os.environ.get("AGIQA3K_ROOT")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "AGIQA-3K")
    for path in candidates:
        if (path / "data.csv").is_file():
            return path
    return None
