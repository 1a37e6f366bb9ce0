"""One progress-bar factory: the mode rule, one summary line per loop, no direct tqdm use."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from tqdm.notebook import tqdm as notebook_tqdm
from tqdm.std import tqdm as text_tqdm

from agiqa_lib.core import progress
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.progress import SummaryBar, format_seconds, progress_bar, progress_mode

LIBRARY = Path(__file__).resolve().parents[1] / "agiqa_lib"


@pytest.mark.parametrize("mode", progress.MODES)
def test_environment_forces_the_mode(mode, monkeypatch):
    monkeypatch.setenv("AGIQA_PROGRESS", mode.upper())
    assert progress_mode() == mode


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("AGIQA_PROGRESS", "fancy")
    with pytest.raises(AgiqaError, match="widget, text, summary, off"):
        progress_mode()


def test_without_override_a_pipe_gets_summaries(monkeypatch):
    monkeypatch.delenv("AGIQA_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "_isatty", lambda stream: False)
    assert progress_mode() == "summary"
    monkeypatch.setattr(progress, "_isatty", lambda stream: True)
    assert progress_mode() == "text"


def test_summary_prints_one_line_when_the_loop_closes(monkeypatch):
    monkeypatch.setenv("AGIQA_PROGRESS", "summary")
    sink = io.StringIO()
    assert list(progress_bar(range(3), desc="train CLIP-AGIQA", unit="epoch", file=sink)) == [0, 1, 2]
    assert re.fullmatch(r"train CLIP-AGIQA: 3/3 epochs in \d\.\d s\n", sink.getvalue())
    sink = io.StringIO()
    with progress_bar(total=5, desc="features test", unit="img", initial=2, file=sink) as bar:
        bar.update(3)
    assert sink.getvalue().startswith("features test: 5/5 images in ")
    assert sink.getvalue().rstrip().endswith("(resumed at 2)")
    sink = io.StringIO()
    list(progress_bar(range(2), desc="Q-Align", unit="batch", file=sink))
    assert sink.getvalue().startswith("Q-Align: 2/2 batches in ")


def test_transient_and_disabled_bars_print_nothing(monkeypatch):
    monkeypatch.setenv("AGIQA_PROGRESS", "summary")
    sink = io.StringIO()
    list(progress_bar(range(3), desc="predict", leave=False, file=sink))
    list(progress_bar(range(3), desc="hidden", disable=True, file=sink))
    list(progress_bar(range(0), desc="nothing to do", file=sink))
    assert sink.getvalue() == ""


def test_each_mode_builds_its_bar(monkeypatch):
    monkeypatch.setenv("AGIQA_PROGRESS", "summary")
    assert isinstance(progress_bar(total=1, file=io.StringIO()), SummaryBar)
    monkeypatch.setenv("AGIQA_PROGRESS", "text")
    bar = progress_bar(total=1, file=io.StringIO())
    assert type(bar) is text_tqdm
    monkeypatch.setenv("AGIQA_PROGRESS", "off")
    assert progress_bar(total=1).disable
    monkeypatch.setenv("AGIQA_PROGRESS", "widget")
    assert isinstance(progress_bar(total=1, display=False), notebook_tqdm)


def test_seconds_read_well():
    assert [format_seconds(s) for s in (0.42, 41.2, 725, 3725)] == [
        "0.4 s", "41 s", "12 min 5 s", "1 h 02 min"]


def test_every_library_loop_uses_the_factory():
    direct = [str(p.relative_to(LIBRARY)) for p in LIBRARY.rglob("*.py")
              if p.name != "progress.py" and re.search(r"^\s*(from|import) tqdm", p.read_text(), re.M)]
    assert direct == []


@pytest.mark.slow
def test_a_kernel_started_by_papermill_prints_summaries(tmp_path):
    """Rule 2 without the override: the kernel's parent process is papermill."""
    import os
    import subprocess
    import sys

    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "from agiqa_lib.core.progress import progress_bar, progress_mode\n"
        "print(progress_mode())\n"
        "for _ in progress_bar(range(3), desc='loop', unit='epoch'): pass")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "AGIQA_PROGRESS"}
    subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "in.ipynb"),
                    str(tmp_path / "out.ipynb"), "-k", "python3"], env=env, check=True,
                   capture_output=True, timeout=300)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.startswith("summary\nloop: 3/3 epochs in ")
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
