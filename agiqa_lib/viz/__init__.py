"""Figures for the notebooks, one module per topic (seaborn/matplotlib, saved to figures/)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, name: str, out_dir: str | Path, dpi: int = 110) -> Path:
    """Save `fig` as `{out_dir}/figures/{name}.png` and return the path."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
