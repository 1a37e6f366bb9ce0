"""Steps that never touch a tensor do not import torch (about 4 s per kernel on 2 cores).

Notebooks 01 (data exploration) and 05 (results) and the `agiqa` entry point are started in a
fresh process each time `run_all.sh` or a user runs them; their imports stay torch-free
(`benchmarks/PROFILE.md`, "Exact wins": 01 23 s -> 16 s, 05 21 s -> 15 s in `--fast`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _imports_of(notebook: str) -> list[str]:
    """The top-level import statements of a paired notebook's `.py`."""
    (path,) = NOTEBOOKS.glob(f"{notebook}_*.py")
    tree = ast.parse(path.read_text())
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def _loaded_heavy_modules(statements: list[str]) -> list[str]:
    code = "\n".join([*statements, "import sys",
                      "print(sorted(m for m in ('torch', 'transformers', 'timm', 'open_clip') "
                      "if m in sys.modules))"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("notebook", ["01", "05"])
def test_notebooks_without_tensors_import_no_torch(notebook):
    statements = _imports_of(notebook)
    assert any("agiqa_lib" in s for s in statements)
    assert _loaded_heavy_modules(statements) == []


def test_the_command_line_entry_imports_no_torch():
    assert _loaded_heavy_modules(["import agiqa_lib.cli"]) == []
