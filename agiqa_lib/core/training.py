"""The resumable training scaffold both papers' trainers use.

`TrainingState` holds what a killed run needs to continue exactly where it stopped: the
trainable weights (and buffers), the optimiser and scheduler state, the per-epoch history
and one best snapshot per selection rule. `save` writes it all into ONE safetensors file
atomically after an epoch; `restore` reads it back when its fingerprint (a hash of
everything the run depends on, computed by the trainer) matches, and otherwise logs why it
starts over. Each trainer reseeds from (seed, epoch), so a resumed run equals an
uninterrupted one.

In a launched run (`core.distributed`) every rank holds the same state (DDP keeps the weights
equal); `save` is collective: rank 0 writes the file while the others wait at a barrier, and
`restore` reads it on every rank.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agiqa_lib.core import distributed
from agiqa_lib.core.checkpoints import read_checkpoint, write_checkpoint
from agiqa_lib.core.errors import AgiqaError

log = logging.getLogger(__name__)

FORMAT = "agiqa-training-state-v1"


class TrainingState:
    """Model, optimiser, scheduler, history and best snapshots of one training run."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any | None = None, fingerprint: str = "") -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.fingerprint = fingerprint
        self.history: list[dict[str, float]] = []
        self.best: dict[str, tuple[int, float]] = {}  # rule -> (epoch, score)
        self.snapshots: dict[str, dict[str, torch.Tensor]] = {}
        self.seconds = 0.0  # wall time the run has taken so far, over every resumed session

    @property
    def epochs_done(self) -> int:
        """Finished epochs (one history row each)."""
        return len(self.history)

    def weights(self) -> dict[str, torch.Tensor]:
        """What training changes: trainable parameters, plus the persistent buffers of the
        layers that own them (e.g. a trained BatchNorm's running statistics)."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.model.named_modules():
            prefix = f"{name}." if name else ""
            params = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
            if not params:
                continue
            out.update({prefix + n: p.detach() for n, p in params.items()})
            out.update({prefix + n: b.detach() for n, b in module.named_buffers(recurse=False)
                        if n not in module._non_persistent_buffers_set})
        return out

    def record(self, row: dict[str, float], scores: dict[str, float] | None = None) -> list[str]:
        """Add one epoch's history row; snapshot the weights for every rule whose score improved.

        `scores` maps a selection rule (e.g. "best_on_val") to this epoch's score (higher is
        better; NaN never counts as an improvement). Returns the rules that improved.
        """
        self.history.append(dict(row))
        improved = []
        for rule, score in (scores or {}).items():
            if math.isfinite(score) and (rule not in self.best or score > self.best[rule][1]):
                self.best[rule] = (self.epochs_done, float(score))
                self.snapshots[rule] = {k: v.clone() for k, v in self.weights().items()}
                improved.append(rule)
        return improved

    def best_epochs(self) -> dict[str, int]:
        """Epoch (1-based) chosen by each rule, plus `last`."""
        return {**{rule: epoch for rule, (epoch, _) in self.best.items()},
                "last": self.epochs_done}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy saved weights (from `weights()` or a snapshot) into the model; every trainable
        tensor must be present."""
        absent = [k for k in self.weights() if k not in weights]
        if absent:
            raise KeyError(f"saved weights lack {absent[:3]}")
        self.model.load_state_dict(weights, strict=False)

    # --- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the whole state into one safetensors file, atomically (in a launched run:
        rank 0 writes, every rank waits for it)."""
        with distributed.main_process_first() as main:
            if main:
                self._write(path)

    def _write(self, path: str | os.PathLike) -> None:
        tensors = {f"model/{k}": v for k, v in self.weights().items()}
        opt = self.optimizer.state_dict()
        for index, entry in opt["state"].items():
            for name, value in entry.items():
                tensors[f"optim/{index}/{name}"] = torch.as_tensor(value).detach().clone()
        for rule, snapshot in self.snapshots.items():
            tensors.update({f"best/{rule}/{k}": v for k, v in snapshot.items()})
        meta = {"format": FORMAT, "fingerprint": self.fingerprint,
                "history": json.dumps(self.history), "best": json.dumps(self.best),
                "seconds": repr(float(self.seconds)),
                "param_groups": json.dumps(opt["param_groups"]),
                "scheduler": json.dumps(self.scheduler.state_dict() if self.scheduler else None)}
        write_checkpoint(path, {k: v.contiguous() for k, v in tensors.items()}, meta)

    def restore(self, path: str | os.PathLike) -> bool:
        """Continue from a saved state with the same fingerprint; False when starting over."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            tensors, meta = read_checkpoint(path)
        except AgiqaError as err:  # a foreign, damaged or diverged file is not resumed from
            log.warning("%s is not resumed from (%s); starting over", path, err)
            return False
        if meta.get("format") != FORMAT or meta.get("fingerprint") != self.fingerprint:
            log.warning("%s belongs to another run (config or data changed, or an older "
                        "format); starting over", path)
            return False
        groups: dict[str, dict[str, torch.Tensor]] = {}
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            kind, rest = key.split("/", 1)
            if kind == "optim":
                index, name = rest.split("/", 1)
                optim_state.setdefault(int(index), {})[name] = value
            elif kind == "best":
                rule, name = rest.split("/", 1)
                self.snapshots.setdefault(rule, {})[name] = value
            else:
                groups.setdefault(kind, {})[rest] = value
        self.load_weights(groups.get("model", {}))
        self.optimizer.load_state_dict({"state": optim_state,
                                        "param_groups": json.loads(meta["param_groups"])})
        scheduler = json.loads(meta["scheduler"])
        if self.scheduler is not None and scheduler is not None:
            self.scheduler.load_state_dict(scheduler)
        self.history = json.loads(meta["history"])
        self.best = {k: (int(v[0]), float(v[1])) for k, v in json.loads(meta["best"]).items()}
        self.seconds = float(meta.get("seconds", 0.0))  # states saved before it was kept: 0
        log.info("resuming %s after epoch %d", path, self.epochs_done)
        return True
