"""Wall time of `run_all.sh` per notebook, for this working tree and optionally a commit before
it, one after the other on the same machine, as a markdown table.

Each run gets a new empty feature cache (cold: demo dataset, CLIP views, tokens and vectors are
all computed) unless `--warm`, which first runs once to fill a cache and then times a second
run on it. The commit before is checked out into a temporary git worktree and runs with its
own `agiqa_lib` (PYTHONPATH; byte-compiled first) in this interpreter's environment. Arguments
after `--` go to `run_all.sh` (the default is its demo run).

    python benchmarks/bench_run_all.py -- --fast
    python benchmarks/bench_run_all.py --before HEAD~1 -- --fast
    python benchmarks/bench_run_all.py --warm -- --fast
    python benchmarks/bench_run_all.py -- --dataset agiqa3k --root ../shared/data/AGIQA-3K

Nothing else should run on the machine meanwhile: compare the columns of one table, not
tables of different runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DONE = re.compile(r"^\[run_all\] (\d\d)_\S+ done in (\d+) s$", re.MULTILINE)


def run_once(repo: Path, args: list[str], cache: Path, out: Path) -> tuple[dict[str, int], float]:
    """Seconds per notebook (run_all's own count) and the whole wall time of one run."""
    env = {**os.environ, "AGIQA_CACHE_DIR": str(cache), "AGIQA_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    done = subprocess.run([str(repo / "run_all.sh"), *args, "--out", str(out)], env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"run_all.sh failed in {repo}:\n{done.stderr[-3000:]}")
    return {nb: int(s) for nb, s in DONE.findall(done.stdout)}, wall


def measure(repo: Path, args: list[str], warm: bool, scratch: Path) -> tuple[dict[str, int], float]:
    cache, out = scratch / "cache", scratch / "out"
    if warm:
        run_once(repo, args, cache, scratch / "fill")
    return run_once(repo, args, cache, out)


def table(columns: dict[str, tuple[dict[str, int], float]]) -> str:
    names = list(columns)
    notebooks = sorted({nb for per_nb, _ in columns.values() for nb in per_nb})
    ratio = len(names) == 2
    head = ["notebook", *names, *(["speed-up"] if ratio else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, values: list[float]) -> str:
        cells = [f"{v:.0f} s" for v in values]
        if ratio and values[1] > 0:
            cells.append(f"{values[0] / values[1]:.2f}x")
        return "| " + " | ".join([label, *cells]) + " |"

    for nb in notebooks:
        lines.append(row(nb, [columns[n][0].get(nb, 0) for n in names]))
    lines.append(row("**all (wall)**", [columns[n][1] for n in names]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a commit to time first (e.g. HEAD~1)")
    parser.add_argument("--warm", action="store_true", help="time a second run on a filled cache")
    parser.add_argument("run_all_args", nargs="*", help="arguments for run_all.sh (after --)")
    opts = parser.parse_args()
    columns: dict[str, tuple[dict[str, int], float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_run_all_") as tmp:
        scratch = Path(tmp)
        if opts.before:
            tree = scratch / "before_tree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                            opts.before], check=True, capture_output=True)
            # bytecode compiled once, as this tree's already is: a fresh checkout's first run
            # would otherwise compile every module in every kernel
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "agiqa_lib")],
                           check=True)
            try:
                columns[f"before ({opts.before})"] = measure(tree, opts.run_all_args, opts.warm,
                                                             scratch / "before")
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], check=False, capture_output=True)
        columns["this tree"] = measure(REPO, opts.run_all_args, opts.warm, scratch / "after")
    state = "warm cache" if opts.warm else "cold cache"
    print(f"run_all.sh {' '.join(opts.run_all_args) or '(demo defaults)'}, {state}, "
          f"{os.cpu_count()} CPUs")
    print(table(columns))


if __name__ == "__main__":
    main()
