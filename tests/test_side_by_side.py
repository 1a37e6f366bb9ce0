"""Independent runs side by side (core.side_by_side): how many workers, threads per worker,
results in the order asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agiqa_lib.core import side_by_side
from agiqa_lib.core.errors import AgiqaError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_worker_count_auto_manual_gpu_and_launched(monkeypatch):
    assert side_by_side.worker_count(0, 6, CPU, cores=2) == 2
    assert side_by_side.worker_count(0, 1, CPU, cores=2) == 1      # one run: in this process
    assert side_by_side.worker_count(0, 6, CPU, cores=16) == 6     # at most one per run
    assert side_by_side.worker_count(0, 6, CUDA, cores=16) == 1    # one device: one at a time
    assert side_by_side.worker_count(1, 6, CPU, cores=2) == 1
    assert side_by_side.worker_count(3, 6, CUDA, cores=2) == 3     # asked for: obeyed
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert side_by_side.worker_count(0, 6, CPU, cores=2) == 1      # launched: already parallel
    with pytest.raises(AgiqaError, match="parallel_runs"):
        side_by_side.worker_count(-1, 6, CPU)


def test_jobs_run_in_workers_with_their_share_of_threads_in_order():
    threads = side_by_side.run_side_by_side(torch.get_num_threads, [(), ()], processes=2,
                                            cores=4, progress=False)
    assert threads == [2, 2]
    # shared inputs reach every worker once, before the job's own arguments
    assert side_by_side.run_side_by_side(pow, [(2,), (3,), (1,)], processes=2, shared=(10,),
                                         progress=False) == [100, 1000, 10]
    assert side_by_side.run_side_by_side(pow, [(2,)], processes=2, shared=(10,)) == [100]


PARENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from agiqa_lib.core import side_by_side
import sleeper
side_by_side.run_side_by_side(sleeper.sleep, [(sys.argv[1],), (sys.argv[1],)], processes=2,
                              progress=False)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split()[2] == "Z")  # a zombie is gone


@pytest.mark.skipif(sys.platform == "win32", reason="workers are not re-parented on Windows")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A killed notebook kernel leaves no worker running on (each checks its parent every
    second)."""
    (tmp_path / "sleeper.py").write_text(
        "import os, time\n"
        "def sleep(folder):\n"
        "    open(os.path.join(folder, f'{os.getpid()}.pid'), 'w').close()\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


def test_study_configs_default_to_auto_and_smoke_runs_to_one_process():
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.ma_agiqa.config import MAStudyConfig

    for cls in (ClipStudyConfig, MAStudyConfig):
        assert cls().parallel_runs == 0
        assert cls(fast=True).parallel_runs == 1          # worker start-up would dominate
        assert cls(fast=True, parallel_runs=2).parallel_runs == 2
        assert cls(profile="full").parallel_runs == 1     # a ViT-B/8 fine-tune per worker
        assert cls(profile="full", parallel_runs=2).parallel_runs == 2
        with pytest.raises(AgiqaError, match="parallel_runs"):
            cls(parallel_runs=-1)
