"""Independent runs side by side (core.side_by_side): how many workers, threads per worker,
results in the order asked for."""

from __future__ import annotations

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
