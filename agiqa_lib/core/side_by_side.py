"""Independent runs (variants, seeds) side by side in worker processes, with the same results.

The small training steps of the `lite` and `tiny` profiles do not get faster with a second
CPU thread (MA-AGIQA `lite`, batch 8: 174 ms per step on 1 thread and on 2), but two processes
of one thread each run two steps in that time (`benchmarks/bench_side_by_side.py`). So on a
CPU the studies train their independent runs in `processes` spawned workers, each with
`cores // processes` torch threads, and collect the results in the order the runs were asked
for. A run's result depends only on its own seeds and on its thread count (float sums are
reordered across threads), so it equals the same run done alone with that many threads.

`parallel_runs` (a study setting) picks the number of workers: 0 = auto (on a CPU one per
usable core, at most one per run; on a GPU 1, since the runs would share one device; the
study configs resolve auto to 1 for `full` and for smoke runs), 1 = one run after another in
this process. A launched (multi-process) study always runs one after
another: its processes are already busy with one run together.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

import torch
import torch.multiprocessing

from agiqa_lib.core import distributed
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.progress import progress_bar

_SHARED: tuple = ()  # a worker's copy of the inputs every run reads (set once per worker)


def usable_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_count(requested: int, runs: int, device: torch.device,
                 cores: int | None = None) -> int:
    """How many worker processes `requested` (0 = auto) means for `runs` runs on `device`,
    with `cores` CPU threads to share (default: every usable core)."""
    if requested < 0:
        raise AgiqaError(f"parallel_runs must be 0 (auto) or a number of processes, got "
                         f"{requested}.")
    if distributed.launched():
        return 1
    if requested == 0:
        requested = (cores or usable_cores()) if device.type == "cpu" else 1
    return max(1, min(requested, runs))


def _start_worker(threads: int, shared: tuple, parent: int) -> None:
    global _SHARED
    torch.set_num_threads(threads)
    _SHARED = shared
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker once the process that started it is gone (a killed or restarted
    notebook kernel) instead of finishing runs nobody will collect."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*_SHARED, *args)


def run_side_by_side(fn: Callable[..., Any], jobs: Sequence[tuple], processes: int,
                     shared: tuple = (), cores: int | None = None, desc: str = "runs",
                     progress: bool = True) -> list:
    """`[fn(*shared, *job) for job in jobs]`, computed by `processes` spawned workers.

    `fn` must be a module-level function (workers import it by name). `shared` is sent to
    each worker once (tensors through shared memory); results come back pickled, so return
    plain data (arrays, frames, state dicts), not modules. With one process the jobs run
    here, with this process's threads; otherwise each worker gets `cores` (default: every
    usable core) // `processes` threads.
    """
    if processes <= 1 or len(jobs) <= 1:
        return [fn(*shared, *job) for job in jobs]
    threads = max(1, (cores or usable_cores()) // processes)
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                             initargs=(threads, shared, os.getpid())) as pool:
        futures = [pool.submit(_call, fn, tuple(job)) for job in jobs]
        with progress_bar(total=len(jobs), desc=f"{desc} ({processes} side by side)",
                          unit="run", disable=not progress) as bar:
            for _ in as_completed(futures):
                bar.update(1)
        return [future.result() for future in futures]
