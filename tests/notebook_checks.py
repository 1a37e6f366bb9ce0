"""Run a notebook with papermill the way run_all.sh does, and read its outputs.

`execute` sets the environment run_all.sh sets (one progress summary line per loop, no hub
progress bars, inline figures), so a test sees what an executed notebook holds.
`warning_lines` lists the output lines a clean run must not have.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
RUN_ENV = {"AGIQA_PROGRESS": "summary", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
WARNING = re.compile(r"warn|iprogress|error:root|traceback", re.IGNORECASE)


@contextmanager
def run_environment():
    """The environment variables of run_all.sh, restored afterwards."""
    saved = {k: os.environ.get(k) for k in RUN_ENV}
    os.environ.update(RUN_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(name: str, out: Path, cwd: Path, **parameters) -> nbformat.NotebookNode:
    """Execute notebooks/{name}.ipynb into `out` with `parameters`; return the executed notebook."""
    import papermill

    with run_environment():
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out),
                                   parameters=parameters, kernel_name="python3", cwd=str(cwd),
                                   progress_bar=False)
    return nbformat.read(out, as_version=4)


def output_text(notebook: nbformat.NotebookNode) -> str:
    """Stream text and text/plain results of every cell."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def warning_lines(notebook: nbformat.NotebookNode) -> list[str]:
    """Lines of stream and error outputs that look like a warning, an error or a tqdm fallback."""
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                lines.append(f"{output.get('ename')}: {output.get('evalue')}")
            elif output.get("output_type") == "stream":
                lines += [line for line in str(output.get("text", "")).splitlines()
                          if WARNING.search(line)]
    return lines


def figure_count(notebook: nbformat.NotebookNode) -> int:
    """How many inline PNG figures the executed notebook holds."""
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", []))


def check_clean_run(notebook: nbformat.NotebookNode, out_dir: Path, figures: list[str],
                    min_bytes: int = 5000) -> None:
    """Each figure saved under `out_dir/figures` and shown inline; no warning in the outputs."""
    for name in figures:
        figure = out_dir / "figures" / f"{name}.png"
        assert figure.is_file() and figure.stat().st_size > min_bytes, figure
    shown = figure_count(notebook)
    assert shown == len(figures), f"{shown} inline figures, expected {len(figures)}"
    lines = warning_lines(notebook)
    assert not lines, f"warnings in the outputs: {lines}"
