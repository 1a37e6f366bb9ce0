"""Run several notebooks with papermill's own command line, one after another, in one process.

    python scripts/run_notebooks.py ::job NAME LOG PAPERMILL_ARGS... [::job NAME LOG ...]

(`run_all.sh` calls it.) Each job is exactly `papermill PAPERMILL_ARGS` (the same parsing of
`-p` / `-y` parameters), with its stdout and stderr (`--log-output`: the cell outputs) in LOG.
Starting Python and importing papermill once instead of once per notebook saves about 4 s per
notebook on a 2-core CPU (`benchmarks/PROFILE.md`). Prints `[run_all] NAME ...` and `[run_all]
NAME done in N s`; at the first failing job it prints which notebook and cell failed, the log's
last 25 lines, and exits 1 without running the jobs after it.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from papermill.cli import papermill

JOB = "::job"


def parse_jobs(argv: list[str]) -> list[tuple[str, Path, list[str]]]:
    """(name, log, papermill arguments) of each `::job NAME LOG ARGS...` group."""
    if not argv or argv[0] != JOB:
        raise SystemExit(f"usage: run_notebooks.py {JOB} NAME LOG PAPERMILL_ARGS... [{JOB} ...]")
    jobs, i = [], 0
    while i < len(argv):
        end = argv.index(JOB, i + 1) if JOB in argv[i + 1:] else len(argv)
        if end - i < 3:
            raise SystemExit(f"run_notebooks.py: {JOB} needs a name and a log path")
        jobs.append((argv[i + 1], Path(argv[i + 2]), argv[i + 3:end]))
        i = end
    return jobs


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's and its children's stdout and stderr (file descriptors 1 and 2)
    to `log` for the block, like the shell's `>log 2>&1`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_job(args: list[str], log: Path) -> bool:
    """One papermill command line with its output in `log`; False when it failed."""
    with output_to(log):
        try:
            papermill.main(args=args, prog_name="papermill", standalone_mode=False)
            return True
        except (Exception, SystemExit):  # SystemExit: papermill's exit for a dead kernel
            traceback.print_exc()
            return False


def main(argv: list[str]) -> int:
    for name, log, args in parse_jobs(argv):
        print(f"[run_all] {name} ...", flush=True)
        start = time.monotonic()
        if not run_job(args, log):
            text = log.read_text(errors="replace")
            cell = re.search(r'Exception encountered at "([^"]*)"', text)
            where = f' (cell "{cell.group(1)}")' if cell else ""
            print(f"[run_all] FAILED: {name}{where}; log: {log}", file=sys.stderr)
            print("\n".join(text.splitlines()[-25:]), file=sys.stderr)
            return 1
        print(f"[run_all] {name} done in {round(time.monotonic() - start)} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
