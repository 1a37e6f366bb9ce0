"""The process group of a launched run, in one place: rank, world size, device, barrier, gathers.

A run is *launched* when a launcher started more than one process and said so in the
environment: `accelerate launch` (`--multi_gpu`, or several machines), `torchrun`, or MPI
(`WORLD_SIZE`, `PMI_SIZE`, `OMPI_COMM_WORLD_SIZE`, `MV2_COMM_WORLD_SIZE` > 1). Then `current()`
creates, once and lazily, accelerate's `PartialState` (torch.distributed underneath: NCCL on
GPUs, gloo on CPUs) and every caller sees the same `ProcessGroup`. Otherwise `current()` is a
single-process group whose barrier and gathers do nothing and which never imports accelerate,
so a plain run behaves exactly as before this module existed.

What the library does with it (each module says more):

- extraction (`core.cache.FeatureStore.sharded_writing`, used by `core.features.fill_store`
  and `ma_agiqa.semantic`): shard i of a cache entry is computed by rank i % world; each rank
  writes its shard files and its own manifest fragment, rank 0 merges after a barrier;
- training (`DataParallel`, used by `clip_agiqa.train` and `ma_agiqa.train`): DDP through
  `accelerate.Accelerator.prepare_model`, every global batch of the single-process run split
  into per-rank micro-batches, gradients averaged so that the step equals the one-process step;
- evaluation: `shard` gives each rank a contiguous slice of the rows, `gather_shards` puts
  the predictions back in row order (each row scored once, no padding);
- files (training state, checkpoints, results, predictions) are written by rank 0 only.

Devices: single-process, the study's `device` option is used as it is. Launched, `device_for`
maps a CUDA request (`cuda`, `cuda:N`, `auto` with CUDA) to `cuda:<local_rank>` (the device
accelerate selected for this process) and anything else to the CPU with gloo.

Gradient accumulation: `ACCELERATE_GRADIENT_ACCUMULATION_STEPS` (accelerate's own variable;
`agiqa train-clip|train-ma --gradient-accumulation-steps N` sets it) splits each process's
share of a global batch into N micro-batches, so the global batch stays the paper's whatever
the number of processes and the memory per process.

Timeout: collective operations wait `AGIQA_DIST_TIMEOUT_S` seconds (default 7200), long enough
for rank 0 to verify a large cache while the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agiqa_lib.core.config import resolve_device
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import atomic_folder

log = logging.getLogger(__name__)

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
ACCUMULATION_VARIABLE = "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"
TIMEOUT_VARIABLE = "AGIQA_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 7200.0


def launched() -> bool:
    """Whether a launcher started this process as one of several (see the module docstring)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 1:
            return True
    return False


def gradient_accumulation_steps() -> int:
    """Micro-batches per process and global batch (`ACCELERATE_GRADIENT_ACCUMULATION_STEPS`,
    default 1)."""
    text = os.environ.get(ACCUMULATION_VARIABLE, "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise AgiqaError(f"{ACCUMULATION_VARIABLE}={text!r} must be a positive integer.")
    return int(text)


def _wants_cuda(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    name = str(device)
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


class ProcessGroup:
    """Rank, world size, device and collectives of this run (one process when not launched)."""

    def __init__(self, state: Any = None, cpu: bool = True) -> None:
        self._state = state  # accelerate.PartialState, None for a single process
        self.cpu = cpu

    # --- who am I -----------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return 1 if self._state is None else int(self._state.num_processes)

    @property
    def rank(self) -> int:
        return 0 if self._state is None else int(self._state.process_index)

    @property
    def local_rank(self) -> int:
        return 0 if self._state is None else int(self._state.local_process_index)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device_for(self, requested: str | torch.device) -> torch.device:
        """The device this process computes on for a `device` option (see the module docstring)."""
        if not self.distributed:
            return resolve_device(str(requested)) if not isinstance(requested, torch.device) \
                else requested
        if self.cpu:
            if _wants_cuda(requested):
                raise AgiqaError(f"device {str(requested)!r} asked for, but this launched run's "
                                 "processes were set up for the CPU (gloo: --device cpu, or "
                                 "ACCELERATE_USE_CPU); pass the same --device to every step.")
            if str(requested) not in ("cpu", "auto"):
                raise AgiqaError(f"a launched run computes on CUDA or on the CPU, not "
                                 f"{str(requested)!r}.")
            return torch.device("cpu")
        if not _wants_cuda(requested):
            raise AgiqaError(f"this launched run uses CUDA (one GPU per process), but device "
                             f"{str(requested)!r} was asked for; pass --device cuda (or "
                             "launch with --cpu for CPU processes).")
        name = str(requested)
        device = torch.device("cuda", self.local_rank)
        if ":" in name and torch.device(name).index != self.local_rank:
            log.warning("device %s ignored in a launched run: rank %d uses %s", name, self.rank,
                        device)
        return device

    # --- collectives (no-ops for one process) -------------------------------------------
    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            self._state.wait_for_everyone()

    def all_gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every process (any picklable object)."""
        if not self.distributed:
            return [obj]
        from accelerate.utils import gather_object

        return list(gather_object([obj]))

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on at least one process."""
        return any(self.all_gather(bool(flag)))

    def shard(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """This process's contiguous slice of `rows` (sizes differ by at most one; no padding,
        so every row is handled by exactly one process)."""
        rows = np.asarray(rows)
        if not self.distributed:
            return rows
        return np.array_split(rows, self.world_size)[self.rank]

    def gather_shards(self, local: Any) -> Any:
        """The per-process results of `shard(rows)` joined in row order on every process.

        `local` is an array (joined along axis 0), None, or a tuple of those (joined item by
        item). Gathered with accelerate's `gather_for_metrics` as objects: the shards may
        differ in length and hold no padding, so nothing has to be dropped.
        """
        if not self.distributed:
            return local
        parts = _accelerator(self).gather_for_metrics([local], use_gather_object=True)
        if len(parts) != self.world_size:
            raise AgiqaError(f"gathered {len(parts)} shards from {self.world_size} processes")
        return _join(parts)


def _join(parts: list[Any]) -> Any:
    """Join per-process results; None parts (e.g. an empty shard's optional output) are left
    out, all None gives None."""
    first = next((p for p in parts if p is not None), None)
    if isinstance(first, tuple):
        return tuple(_join([None if p is None else p[i] for p in parts])
                     for i in range(len(first)))
    if first is None:
        return None
    arrays = [np.asarray(p) for p in parts if p is not None]
    nonempty = [a for a in arrays if len(a)]
    return np.concatenate(nonempty or arrays[:1], axis=0)


_SINGLE = ProcessGroup()
_GROUP: ProcessGroup | None = None
_ACCELERATOR: Any = None


def current(device: str | torch.device | None = None) -> ProcessGroup:
    """The process group of this run, created on first use (single-process when not launched).

    The first call of a launched run decides the backend: CUDA/NCCL when `device` asks for
    CUDA (or, with no `device`, when CUDA is available and `ACCELERATE_USE_CPU` is not set),
    else CPU/gloo.
    """
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    if not launched():
        return _SINGLE
    from accelerate import PartialState

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    cpu = forced_cpu or not _wants_cuda(device)
    if not cpu and not torch.cuda.is_available():
        raise AgiqaError("a CUDA device was asked for in a launched run, but CUDA is not "
                         "available here; pass --device cpu.")
    timeout = float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S))
    state = PartialState(cpu=cpu, timeout=datetime.timedelta(seconds=timeout))
    _GROUP = ProcessGroup(state, cpu=cpu)
    if _GROUP.is_main:
        log.info("launched run: %d processes, backend %s", _GROUP.world_size, state.backend)
    return _GROUP


def close() -> None:
    """End a launched run's process group (after a last barrier); nothing for one process."""
    global _GROUP, _ACCELERATOR
    if _GROUP is None:
        return
    _GROUP.barrier()
    _ACCELERATOR = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _GROUP = None


def _accelerator(group: ProcessGroup) -> Any:
    """The run's `accelerate.Accelerator` (precision as the release: no autocast)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        if asked not in ("", "no") and group.is_main:
            log.warning("accelerate's mixed_precision=%s is ignored: each model computes in the "
                        "precision its study config gives (CLIP-AGIQA fp16_as_released holds "
                        "fp16 tensors as released; MA-AGIQA trains in fp32 as released)", asked)
        _ACCELERATOR = Accelerator(cpu=group.cpu, mixed_precision="no")
    return _ACCELERATOR


class DataParallel:
    """One training run's data parallelism: DDP (through accelerate) and the micro-batch plan.

    Every global batch (the single-process run's batch, in its order) is split into
    contiguous per-rank parts, and each part into `accumulation` micro-batches; a micro-batch of
    m of the global batch's n rows has its mean loss scaled by `loss_scale(m, n)` = m * world / n,
    so that after DDP averages the gradients over the ranks the step uses the gradient of the
    global batch's mean loss, as one process does. Active when the run is launched or
    accumulation is asked for; otherwise trainers keep their single-process loop.
    """

    def __init__(self, module: nn.Module, group: ProcessGroup | None = None) -> None:
        self.group = group or current()
        self.accumulation = gradient_accumulation_steps()
        self.module = module
        self._accelerator = None
        if self.group.distributed:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            _accelerator(self.group)  # the shared one first: it warns about mixed precision
            # one Accelerator per run, so that its references to the run's model go with it;
            # no buffer broadcast: no trained layer has buffers that change while training
            self._accelerator = Accelerator(
                cpu=self.group.cpu, mixed_precision="no",
                kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
            self.module = self._accelerator.prepare_model(module, device_placement=False)

    @staticmethod
    def wanted(group: ProcessGroup | None = None) -> bool:
        """Whether a trainer should take the data-parallel path (launched, or accumulating)."""
        return (group or current()).distributed or gradient_accumulation_steps() > 1

    def parts(self, n: int) -> list[np.ndarray]:
        """Positions (0..n-1 in a global batch of n rows) of this process's micro-batches."""
        world, steps = self.group.world_size, self.accumulation
        if n < world * steps:
            raise AgiqaError(f"a global batch of {n} rows cannot be split over {world} "
                             f"process(es) x {steps} accumulation step(s); use fewer processes "
                             "or accumulation steps.")
        mine = np.array_split(np.arange(n), world)[self.group.rank]
        return np.array_split(mine, steps)

    def loss_scale(self, m: int, n: int) -> float:
        """Factor of a micro-batch's mean loss (m of n rows) so that the averaged gradient is the
        global batch's."""
        return m * self.group.world_size / n

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Context of a micro-batch's forward/backward: gradients are all-reduced only on the
        last micro-batch of a global batch (accelerate's `no_sync` before it)."""
        if last or self._accelerator is None:
            return contextlib.nullcontext()
        return self._accelerator.no_sync(self.module)

    def sum_steps(self, values: list[float]) -> list[float]:
        """Per-step sums over the processes of per-process per-step values."""
        gathered = self.group.all_gather(list(values))
        return [float(sum(column)) for column in zip(*gathered)]

    def gather_values(self, values: np.ndarray) -> np.ndarray:
        """Concatenation (rank order) of per-process arrays."""
        return np.concatenate([np.asarray(v) for v in self.group.all_gather(np.asarray(values))])

    def close(self) -> None:
        """Drop accelerate's references to the run's model."""
        if self._accelerator is not None:
            self._accelerator.free_memory()
            self._accelerator = None
        self.module = None


@contextlib.contextmanager
def main_process_first(group: ProcessGroup | None = None) -> Iterator[bool]:
    """Yields whether this process is rank 0; every process waits at the end of the block until
    rank 0 has finished it. For work done once per run (writing files) that all then read:
    `with main_process_first() as main: if main: write()`. (On an error the barrier is
    skipped; the launcher stops the other processes.)"""
    group = group or current()
    yield group.is_main
    group.barrier()


def write_model_folder_once(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`folder` holding a model saved by `write(staging)` (with `save_pretrained`), built once.

    Reused when it has a config.json. Otherwise rank 0 writes it into a staging folder that is
    renamed into place (`io.atomic_folder`) while the other processes of a launched run wait:
    transformers' `save_pretrained` writes weights on rank 0 only, so a folder written by
    another rank would lack them.
    """
    folder = Path(folder)
    with main_process_first() as main:
        if main and not (folder / "config.json").is_file():
            with atomic_folder(folder) as staging:  # a concurrent builder's copy wins
                write(staging)
    return folder
