"""scripts/run_notebooks.py: each notebook runs in a kernel started (and made to import its
modules) while the notebook before it ran; a notebook's own errors still name its cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from run_notebooks import imported_modules, warm_up_code  # noqa: E402


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(tmp_path: Path, *notebooks: Path) -> subprocess.CompletedProcess:
    args = []
    for nb in notebooks:
        args += ["::job", nb.stem, str(tmp_path / f"{nb.stem}.log"), str(nb),
                 str(tmp_path / f"{nb.stem}.out.ipynb"), "--cwd", str(tmp_path)]
    return subprocess.run([sys.executable, str(REPO / "scripts" / "run_notebooks.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _outputs(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]


def test_imported_modules_lists_top_level_imports_in_order(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", "import json\nfrom os import path as p, sep",
                   "%matplotlib inline", "def f():\n    import wave\nfrom . import x")
    assert imported_modules(json.loads(nb.read_text())) == ["json", "os", "os.path", "os.sep"]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="imports only at idle priority (Linux)")
def test_warm_up_code_imports_and_leaves_no_name(tmp_path):
    code = warm_up_code(["json", "no_such_module_here"]) + "print(sorted(n for n in dir() " \
        "if not n.startswith('__')), 'json' in __import__('sys').modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["[]", "True"]


def test_warm_up_refuses_a_kernel_left_with_idle_priority_threads(tmp_path):
    """A module that starts a thread on import (in the idle-priority import thread) makes the
    warm-up fail, so that no notebook runs with such a thread."""
    (tmp_path / "starts_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n")
    code = warm_up_code(["starts_thread"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    if not Path("/proc/self/task").is_dir() or not hasattr(os, "SCHED_IDLE"):
        assert done.returncode == 0  # nothing imported there
    else:
        assert done.returncode != 0 and "threads started at idle priority" in done.stderr
    nb = _notebook(tmp_path / "n1.ipynb", "import starts_thread\nprint('ran')")
    proc = _run(tmp_path, nb)
    assert proc.returncode == 0, proc.stderr
    assert _outputs(tmp_path / "n1.out.ipynb") == ["ran\n"]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="imports only at idle priority (Linux)")
def test_next_notebook_runs_in_its_warm_kernel(tmp_path):
    """The second notebook's first cell sees the module its later cell imports already loaded
    (the warm-up imported it), and a module it never imports not loaded."""
    first = _notebook(tmp_path / "n1.ipynb", "import time\ntime.sleep(1)")
    second = _notebook(tmp_path / "n2.ipynb",
                       "import sys, os\nprint('mailbox' in sys.modules, 'wave' in sys.modules, "
                       "os.getcwd())",
                       "import mailbox")
    proc = _run(tmp_path, first, second)
    assert proc.returncode == 0, proc.stderr
    assert "n1 done in" in proc.stdout and "n2 done in" in proc.stdout
    assert _outputs(tmp_path / "n2.out.ipynb")[0].split() == ["True", "False", str(tmp_path)]
    nb = nbformat.read(tmp_path / "n2.out.ipynb", as_version=4)
    assert [c.execution_count for c in nb.cells] == [1, 2]  # the warm-up left no history


def test_failing_notebook_stops_the_run_and_names_its_cell(tmp_path):
    (tmp_path / "broken_module_for_test.py").write_text("raise RuntimeError('broken on import')\n")
    first = _notebook(tmp_path / "n1.ipynb", "x = 1")
    second = _notebook(tmp_path / "n2.ipynb", "import broken_module_for_test")
    third = _notebook(tmp_path / "n3.ipynb", "y = 2")
    proc = _run(tmp_path, first, second, third)
    assert proc.returncode == 1
    assert "FAILED: n2" in proc.stderr and "broken on import" in proc.stderr
    assert not (tmp_path / "n3.out.ipynb").exists()


def test_kernel_that_cannot_start_is_reported(tmp_path):
    kernel = "no-such-kernel"
    nb = _notebook(tmp_path / "n1.ipynb", "x = 1")
    doc = nbformat.read(nb, as_version=4)
    doc.metadata["kernelspec"]["name"] = kernel
    nbformat.write(doc, nb)
    proc = _run(tmp_path, nb)
    assert proc.returncode == 1
    log = (tmp_path / "n1.log").read_text()
    assert "warm kernel not used" in log and kernel in log
