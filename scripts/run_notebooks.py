"""Run several notebooks with papermill's own command line, one after another, in one process.

    python scripts/run_notebooks.py ::job NAME LOG PAPERMILL_ARGS... [::job NAME LOG ...]

(`run_all.sh` calls it.) Each job is exactly `papermill PAPERMILL_ARGS` (the same parsing of
`-p` / `-y` parameters), with its stdout and stderr (`--log-output`: the cell outputs) in LOG.
Starting Python and importing papermill once instead of once per notebook saves about 4 s per
notebook on a 2-core CPU (`benchmarks/PROFILE.md`). While one notebook runs, the next one's
kernel starts and imports that notebook's modules (`WarmKernel`), so its first cells wait
neither for a kernel nor for torch, and the kernel before it shuts down in the background
(`--fast` cold 70 s -> 56 s); the notebook itself runs unchanged in that kernel. Prints
`[run_all] NAME ...` and `[run_all] NAME done in N s`; at the first failing job it prints
which notebook and cell failed, the log's last 25 lines, and exits 1 without running the jobs
after it.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager
from papermill.cli import papermill
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

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


def option(args: list[str], name: str, default: str) -> str:
    """The value after `name` in a papermill command line (`default` when absent)."""
    return args[args.index(name) + 1] if name in args[:-1] else default


def imported_modules(notebook: dict) -> list[str]:
    """The modules the code cells of a notebook (its parsed JSON) import at top level, in
    order (for `from a import b` both `a` and `a.b`: b may be a submodule). Cells that are not
    plain Python are skipped."""
    modules: list[str] = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return list(dict.fromkeys(modules))


POOL_MODULES = ("numpy", "scipy.linalg")  # their BLAS starts its worker threads on import


def warm_up(modules: list[str], pools: tuple[str, ...]) -> None:
    """Import `modules` (run inside a fresh kernel: `warm_up_code`).

    The imports run in a thread at idle CPU priority (Linux SCHED_IDLE), so they only take a
    core the running notebook leaves free (imports at normal priority made a 2-thread torch
    step of the running notebook 5x slower). Where there is no idle priority nothing is
    imported. A thread started by an import inherits that priority and cannot be given back its
    normal one without privileges, so `pools` (libraries that start threads on import) are
    imported first at normal priority, and this raises when any other idle-priority thread is
    left: the runner then discards the kernel. An import that fails is left for the notebook's
    own cell to report.
    """
    import importlib
    import os
    import threading

    def imports(names):
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                pass

    def idle_imports():
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            return
        imports(modules)

    def is_idle(tid):
        try:
            return os.sched_getscheduler(tid) == os.SCHED_IDLE
        except OSError:  # the thread has just exited
            return False

    if not hasattr(os, "SCHED_IDLE") or not os.path.isdir("/proc/self/task"):
        return
    imports(pools)
    thread = threading.Thread(target=idle_imports)
    thread.start()
    thread.join()
    idle = [tid for tid in map(int, os.listdir("/proc/self/task"))
            if tid != thread.native_id and is_idle(tid)]  # the import thread may be exiting
    if idle:
        raise RuntimeError(f"{len(idle)} threads started at idle priority")


def warm_up_code(modules: list[str]) -> str:
    """Code that runs `warm_up(modules)` in a kernel and leaves no name behind."""
    return (f"{inspect.getsource(warm_up)}"
            f"try:\n    warm_up({modules!r}, {POOL_MODULES!r})\nfinally:\n    del warm_up\n")


class WarmKernel:
    """A notebook's kernel, started and made to import the notebook's modules in a background
    thread while the notebook before it runs, and shut down in the background after it ran.

    The kernel gets the notebook's kernel name and working directory and this process's
    environment, as papermill's own would, and writes its own stdout and stderr to the
    notebook's log. `kernel_manager()` hands it to papermill; None when it could not start.
    """

    def __init__(self, notebook: Path, cwd: Path, log: Path) -> None:
        content = json.loads(notebook.read_text())
        self.kernel_name = content["metadata"]["kernelspec"]["name"]
        self.code = warm_up_code(imported_modules(content))
        self.cwd, self.log = cwd, log
        self.km: KernelManager | None = None
        self.error: BaseException | None = None
        self.starter = threading.Thread(target=self._start, daemon=True)
        self.stopper = threading.Thread(target=self._stop, daemon=True)
        self.starter.start()

    def _start(self) -> None:
        try:
            km = KernelManager(kernel_name=self.kernel_name,
                               client_class="jupyter_client.asynchronous.AsyncKernelClient")
            with open(self.log, "ab") as log:
                km.start_kernel(cwd=str(self.cwd), stdout=log, stderr=log)
            self.km = km
            client = BlockingKernelClient(**km.get_connection_info(session=True))
            client.start_channels()
            try:
                client.wait_for_ready(timeout=120)
                reply = client.execute_interactive(self.code, silent=True, store_history=False,
                                                   timeout=300)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"warm-up: {reply['content'].get('evalue')}")
            finally:
                client.stop_channels()
        except BaseException as error:  # reported by kernel_manager(); papermill starts its own
            self.error = error

    def _stop(self) -> None:
        self.starter.join()
        if self.km is not None and self.km.has_kernel:
            self.km.shutdown_kernel(now=False)

    def kernel_manager(self) -> KernelManager | None:
        """The warm kernel's manager once it is ready, or None (it is shut down) on failure."""
        self.starter.join()
        if self.error is None:
            return self.km
        print(f"[run_all] warm kernel not used ({type(self.error).__name__}: {self.error}); "
              f"papermill starts one", file=sys.stderr)
        self.stop()
        return None

    def stop(self) -> None:
        """Shut the kernel down in the background (a graceful shutdown takes about 1.5 s)."""
        if self.stopper.ident is None:  # not started yet
            self.stopper.start()

    def join(self) -> None:
        """Wait until the kernel has started and then stopped."""
        self.stop()
        self.stopper.join()


_WARM: dict[str, WarmKernel] = {}  # notebook path -> its warm kernel, taken by WarmEngine


class WarmEngine(NBClientEngine):
    """papermill's nbclient engine, executing in the notebook's `WarmKernel` when one is
    ready (same kernel name) and in a kernel of its own otherwise."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                 stderr_file=None, start_timeout=60, execution_timeout=None,
                                 **kwargs):
        warm = _WARM.pop(str(kwargs.get("input_path")), None)
        km = warm.kernel_manager() if warm is not None else None
        if km is None or (kernel_name and kernel_name != warm.kernel_name):
            if warm is not None:
                warm.stop()
            return super().execute_managed_notebook(
                nb_man, kernel_name, log_output=log_output, stdout_file=stdout_file,
                stderr_file=stderr_file, start_timeout=start_timeout,
                execution_timeout=execution_timeout, **kwargs)
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        client = PapermillNotebookClient(
            nb_man, km=km, **merge_kwargs(kwargs, timeout=execution_timeout,
                                         startup_timeout=start_timeout, kernel_name=kernel_name,
                                         log=logger, log_output=log_output,
                                         stdout_file=stdout_file, stderr_file=stderr_file))
        try:
            return client.execute()
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
            warm.stop()


papermill_engines.register("warm", WarmEngine)


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's and its children's stdout and stderr (file descriptors 1 and 2)
    to the end of `log` for the block, like the shell's `>>log 2>&1`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
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
    """One papermill command line (with the warm engine) with its output in `log`; False
    when it failed."""
    with output_to(log):
        try:
            papermill.main(args=[*args, "--engine", "warm"], prog_name="papermill",
                           standalone_mode=False)
            return True
        except (Exception, SystemExit):  # SystemExit: papermill's exit for a dead kernel
            traceback.print_exc()
            return False


def warm_kernel(args: list[str], log: Path) -> WarmKernel:
    """Start the kernel of the job with papermill arguments `args` (its log emptied first)."""
    log.write_bytes(b"")
    notebook, cwd = Path(args[0]), Path(option(args, "--cwd", os.getcwd()))
    warm = WarmKernel(notebook, cwd, log)
    _WARM[args[0]] = warm
    return warm


def main(argv: list[str]) -> int:
    jobs = parse_jobs(argv)
    kernels = [warm_kernel(jobs[0][2], jobs[0][1])]
    try:
        for i, (name, log, args) in enumerate(jobs):
            print(f"[run_all] {name} ...", flush=True)
            start = time.monotonic()
            if i + 1 < len(jobs):  # the next notebook's kernel starts while this one runs
                kernels.append(warm_kernel(jobs[i + 1][2], jobs[i + 1][1]))
            if not run_job(args, log):
                text = log.read_text(errors="replace")
                cell = re.search(r'Exception encountered at "([^"]*)"', text)
                where = f' (cell "{cell.group(1)}")' if cell else ""
                print(f"[run_all] FAILED: {name}{where}; log: {log}", file=sys.stderr)
                print("\n".join(text.splitlines()[-25:]), file=sys.stderr)
                return 1
            print(f"[run_all] {name} done in {round(time.monotonic() - start)} s", flush=True)
        return 0
    finally:
        for kernel in kernels:
            kernel.join()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
