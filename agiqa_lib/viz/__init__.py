"""Figures for the notebooks, one module per topic (seaborn/matplotlib, saved to figures/)."""
