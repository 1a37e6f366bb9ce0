"""Every notebook is a jupytext pair (percent-format .py + .ipynb without outputs) in sync,
with one parameters cell that takes what run_all.sh passes.

Re-sync after editing either side: `.venv/bin/jupytext --sync notebooks/0*.py`.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
RUN_ALL_PARAMETERS = ("dataset", "root", "profile", "out_dir", "results_path", "fast", "device")


def _pair(source: Path):
    return jupytext.read(source), jupytext.read(source.with_suffix(".ipynb"))


def _cells(notebook) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip(), list(c.metadata.get("tags", [])))
            for c in notebook.cells]


def test_five_notebook_pairs_in_order():
    assert [p.name[:3] for p in SOURCES] == ["01_", "02_", "03_", "04_", "05_"]
    assert sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) == [p.stem for p in SOURCES]
    assert not list((REPO / "scripts").glob("nb_0*.py")), "the notebook builders are gone"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem[:2])
def test_pair_is_in_sync(source):
    text, ipynb = _pair(source)
    for notebook in (text, ipynb):
        assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert _cells(text) == _cells(ipynb), (
        f"{source.name} and its .ipynb differ: run `jupytext --sync notebooks/{source.name}`")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem[:2])
def test_committed_ipynb_has_no_outputs(source):
    _, ipynb = _pair(source)
    code = [c for c in ipynb.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem[:2])
def test_parameters_cell_takes_run_all_parameters(source):
    _, ipynb = _pair(source)
    cells = [c for c in ipynb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    namespace: dict = {}
    exec(cells[0].source, namespace)  # a parameters cell holds plain assignments only
    missing = [name for name in RUN_ALL_PARAMETERS if name not in namespace]
    assert not missing, f"{source.stem} parameters cell lacks {missing}"
