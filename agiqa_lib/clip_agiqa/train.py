"""Training CLIP-AGIQA (and its image-only control) with the released recipe.

SGD (lr 0.002, momentum 0.9, weight decay 5e-4), batch 32 (last partial batch dropped, as
Dassl's train loader), cosine schedule over E epochs after one warm-up epoch at a constant
1e-5 (Dassl's ConstantWarmupScheduler; the rate changes once per epoch), MSE on the raw MOS.

The CLIP encoders are frozen, so an image's feature depends only on its pixels after
augmentation. Two training paths (the batches: `clip_agiqa.batches`), both evaluated every epoch
on the fixed (cached) test view while the text features are recomputed at every step through
the prompt learner: fresh views (`fit_selection_rules(fresh=FreshViews(...))`; the release and
the `full` default) and cached views (the speed option and the `lite`/`tiny` default).

Selection rules: `best_on_test` picks the epoch with the best test SRCC (what the released
code reports: Dassl's "best_val" falls back to the test set when there is no val set),
`last` takes the final epoch, `best_on_val` picks the best epoch on a validation part (the
split's own, or one carved from train, seeded) without looking at the test set.

Launched on several processes (`accelerate launch` / `torchrun`, see `core.distributed`), the
trainable part (context + head) is wrapped in DDP by accelerate and every epoch follows the
single-process run: the same batches of 32 in the same order (one generator seeded from
(seed, epoch)), each rank taking its contiguous slice of every batch (split further into
micro-batches with gradient accumulation) and loading / encoding only its own images; the
loss of a slice is scaled so that the averaged gradient is the batch's, and SGD steps once per
batch of 32. Evaluation scores each rank's slice of the eval rows, gathered in row order (each
image once). Precision is the study's (`fp16_as_released` holds fp16 tensors as released;
accelerate's autocast is not used). Dropout masks differ from a one-process run, since each
rank draws them for its own rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from agiqa_lib.clip_agiqa.batches import CachedFeatureBatches, ImageBatches
from agiqa_lib.core import distributed, side_by_side
from agiqa_lib.core.distributed import DataParallel
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.progress import progress_bar
from agiqa_lib.core.tensor_io import tensors_from_bytes, tensors_to_bytes
from agiqa_lib.core.training import TrainingState

SELECTION_RULES = ("best_on_test", "last", "best_on_val")


@dataclass
class TrainConfig:
    """The released optimisation recipe (defaults) plus seeds and checkpointing."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    seed: int = 0
    checkpoint_every: int = 5  # epochs between resumable training-state saves


def lr_at_epoch(epoch: int, config: TrainConfig) -> float:
    """Learning rate of a (0-based) epoch: constant warm-up, then cosine from `lr` over E epochs."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    step = epoch - config.warmup_epochs
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / config.epochs))


@dataclass
class FreshViews:
    """What the fresh-view path needs: every row's image path, the random training transform
    (the bundle's `preprocess_train`), the frozen encoder (batch on `device` -> features)."""

    paths: Sequence[str]
    transform: Callable
    encode: Callable[[torch.Tensor], torch.Tensor]
    device: str | torch.device = "cpu"
    num_workers: int = 0


@torch.no_grad()
def predict(model: nn.Module, image_features: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Predicted MOS for cached image features [N, D] (eval mode; text features computed once)."""
    model.eval()
    device = _device_of(model)
    text = model.text_features()
    out = [model.score_features(image_features[i:i + batch_size].to(device).float(), text)
           for i in range(0, image_features.shape[0], batch_size)]
    return torch.cat(out).cpu().numpy().astype(float) if out else np.zeros(0)


def predict_rows(model: nn.Module, image_features: torch.Tensor) -> np.ndarray:
    """`predict` over every row; in a launched run each process scores its slice of the rows
    and the slices are gathered in row order (each row scored once)."""
    group = distributed.current()
    if not group.distributed:
        return predict(model, image_features)
    rows = group.shard(np.arange(image_features.shape[0]))
    return group.gather_shards(predict(model, image_features[torch.as_tensor(rows)]))


class _ScoreFeatures(nn.Module):
    """The training forward (image features -> scores) as a module, for DDP to wrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.score_features(features)


@dataclass
class EvalSet:
    """Fixed-view features and MOS of a part used to monitor training (test or val)."""

    features: torch.Tensor
    mos: np.ndarray


@dataclass
class TrainResult:
    """Per-epoch history and the trainable weights chosen by each selection rule."""

    history: pd.DataFrame
    states: dict[str, dict[str, torch.Tensor]]
    best_epochs: dict[str, int] = field(default_factory=dict)


def train_clip_agiqa(model: nn.Module, batches: CachedFeatureBatches | ImageBatches,
                     eval_sets: dict[str, EvalSet], config: TrainConfig | None = None,
                     checkpoint_path: str | os.PathLike | None = None,
                     progress: bool = True, desc: str = "train CLIP-AGIQA") -> TrainResult:
    """Train the context + head with MSE on the MOS; evaluate every epoch on `eval_sets`.

    Keeps the weights of the last epoch and of the best-SRCC epoch on each eval set
    (`best_on_<name>`). With `checkpoint_path`, the training state (`core.training`) is
    saved every `config.checkpoint_every` epochs (atomically) and a rerun resumes from it.
    In a launched run every rank calls this (see the module docstring).
    """
    config = config or TrainConfig()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    kind = getattr(batches, "kind", "cached")  # a cached run's state is not a fresh run's
    model_config = getattr(model, "config", None)  # nor another scale's
    scale = getattr(model_config, "feature_scale", 1.0)
    text_scale = getattr(model_config, "text_feature_scale", None)
    fingerprint = hashlib.sha256(json.dumps([asdict(config), sorted(eval_sets)]
                                            + ([] if kind == "cached" else [kind])
                                            + ([] if scale == 1.0 else [f"scale={scale}"])
                                            + ([] if text_scale is None
                                               else [f"text_scale={text_scale}"])
                                            ).encode())
    state = TrainingState(model, optimizer, fingerprint=fingerprint.hexdigest()[:16])
    if checkpoint_path:
        state.restore(checkpoint_path)
    parallel = DataParallel(_ScoreFeatures(model)) if DataParallel.wanted() else None
    bar = progress_bar(range(state.epochs_done, config.epochs), desc=desc, unit="epoch",
                       disable=not progress or not distributed.current().is_main,
                       initial=state.epochs_done, total=config.epochs)
    for epoch in bar:
        lr = lr_at_epoch(epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if parallel is None:
            loss = _train_one_epoch(model, batches, optimizer, epoch, config.seed)
        else:
            loss = _train_one_epoch_parallel(model, parallel, batches, optimizer, epoch,
                                             config.seed)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss}
        for name, part in eval_sets.items():
            pred = predict_rows(model, part.features)
            row[f"{name}_srcc"] = _srcc(pred, part.mos)
            row[f"{name}_plcc"] = _plcc(pred, part.mos)
            row[f"{name}_mse"] = float(np.mean((pred - part.mos) ** 2))
        state.record(row, {f"best_on_{name}": row[f"{name}_srcc"] for name in eval_sets})
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("srcc") or k == "train_loss"})
        done = epoch + 1 == config.epochs
        if checkpoint_path and ((epoch + 1) % config.checkpoint_every == 0 or done):
            state.save(checkpoint_path)
    if parallel is not None:
        parallel.close()
    states = {**state.snapshots, "last": {k: v.clone() for k, v in state.weights().items()}}
    return TrainResult(pd.DataFrame(state.history), states, state.best_epochs())


def _train_detached(*args: Any) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, int]]:
    """`train_clip_agiqa` in a worker process: history, each rule's trainable weights as
    safetensors bytes, best epochs (no shared-memory handle per tensor travels back)."""
    result = train_clip_agiqa(*args)
    states = {rule: tensors_to_bytes(state) for rule, state in result.states.items()}
    return result.history, states, result.best_epochs


def _train_one_epoch(model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                     epoch: int, seed: int) -> float:
    torch.manual_seed(seed * 100_003 + epoch)  # dropout masks: reproducible on resume
    model.train()
    device = _device_of(model)
    losses = []
    for features, mos in batches.epoch(epoch):
        features, mos = features.to(device), mos.to(device)
        loss = nn.functional.mse_loss(model.score_features(features), mos.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _train_one_epoch_parallel(model: nn.Module, parallel: DataParallel, batches: Any,
                              optimizer: torch.optim.Optimizer, epoch: int, seed: int) -> float:
    """One epoch of the launched (or accumulating) run: this process's micro-batches of every
    batch, one optimiser step per batch; returns the mean over batches of the batch loss."""
    torch.manual_seed(seed * 100_003 + epoch)  # dropout masks: reproducible on resume
    model.train()
    device = _device_of(model)
    shares = []  # this process's part of each batch's mean loss
    for n, micro in batches.sharded_epoch(epoch, parallel.parts):
        optimizer.zero_grad(set_to_none=True)
        share = 0.0
        for i, (features, mos) in enumerate(micro):
            features, mos = features.to(device), mos.to(device).float()
            with parallel.sync(last=i == len(micro) - 1):
                loss = nn.functional.mse_loss(parallel.module(features), mos)
                (loss * parallel.loss_scale(len(mos), n)).backward()
            share += loss.item() * len(mos) / n
        optimizer.step()
        shares.append(share)
    return float(np.mean(parallel.sum_steps(shares)))


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's trainable weights live (batches are moved there)."""
    return next(p for p in model.parameters() if p.requires_grad).device


def _srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    return float(stats.spearmanr(pred, mos)[0]) if np.std(pred) > 0 else float("nan")


def _plcc(pred: np.ndarray, mos: np.ndarray) -> float:
    return float(stats.pearsonr(pred, mos)[0]) if np.std(pred) > 0 else float("nan")


@dataclass
class ClipFeatures:
    """Frozen-CLIP image features: the fixed test view of every row and K augmented views of
    the rows training can draw from (`augmented_rows`, sorted; None: every row)."""

    test: torch.Tensor  # [N, D]
    augmented: torch.Tensor | None = None  # [K, M, D]: M = len(augmented_rows), or N
    augmented_rows: np.ndarray | None = None

    @classmethod
    def from_views(cls, views: dict[str, torch.Tensor],
                   augmented_rows: Sequence[int] | None = None) -> ClipFeatures:
        """From `features.clip_image_features` output ({"test": ..., "aug0": ..., ...}), whose
        augmented views cover `augmented_rows` (its `aug_rows`)."""
        aug = sorted((k for k in views if k.startswith("aug")), key=lambda k: int(k[3:]))
        if not aug:
            return cls(views["test"])
        rows = None if augmented_rows is None else np.asarray(augmented_rows, dtype=np.int64)
        if rows is not None and np.any(np.diff(rows) <= 0):
            raise AgiqaError("augmented_rows must be sorted row indices without repeats.")
        return cls(views["test"], torch.stack([views[k] for k in aug]), rows)

    def training_views(self, rows: np.ndarray) -> torch.Tensor:
        """[K, n, D] augmented views of `rows` (the test view when none were cached)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.augmented is None:
            return self.test.unsqueeze(0)[:, torch.as_tensor(rows)]
        if self.augmented_rows is None:
            return self.augmented[:, torch.as_tensor(rows)]
        at = np.searchsorted(self.augmented_rows, rows)
        known = at < len(self.augmented_rows)
        known[known] = self.augmented_rows[at[known]] == rows[known]
        if not known.all():
            raise AgiqaError(f"rows {rows[~known][:5].tolist()} have no cached augmented views "
                             "(only the training rows have).")
        return self.augmented[:, torch.as_tensor(at)]


@dataclass
class SelectionRun:
    """Test predictions under each selection rule, with the histories of the runs behind them."""

    predictions: dict[str, np.ndarray]
    best_epochs: dict[str, int]
    histories: dict[str, pd.DataFrame]
    states: dict[str, dict[str, torch.Tensor]]


def carve_validation(train_rows: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split train row indices into (train, val), seeded; val gets `fraction` of them."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.asarray(train_rows))
    n_val = max(1, int(round(fraction * len(shuffled))))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


@dataclass
class SelectionPlan:
    """The training runs one `SelectionRun` needs (one or two), ready to train: a job per run
    for `_train_detached`, the models and eval sets to predict with afterwards."""

    rules: Sequence[str]
    run_names: list[str]
    jobs: list[tuple]
    models: dict[str, nn.Module]
    eval_parts: dict[str, dict[str, EvalSet]]
    fresh: bool  # fresh views read images through this process's encoder: never in a worker


def plan_selection_rules(make_model: Callable[[], nn.Module], features: ClipFeatures,
                         mos: Sequence[float], split: pd.Series,
                         config: TrainConfig | None = None,
                         rules: Sequence[str] = SELECTION_RULES, val_fraction: float = 0.1,
                         checkpoint_dir: str | os.PathLike | None = None,
                         progress: bool = True,
                         fresh: FreshViews | None = None) -> SelectionPlan:
    """The runs `fit_selection_rules` trains, built but not trained (see there)."""
    config = config or TrainConfig()
    unknown = sorted(set(rules) - set(SELECTION_RULES))
    if unknown:
        raise AgiqaError(f"unknown selection rules {unknown}; use {SELECTION_RULES}")
    parts = np.asarray(split)
    train, test, val = (np.flatnonzero(parts == p) for p in ("train", "test", "val"))
    if len(train) == 0 or len(test) == 0:
        raise AgiqaError("the split has no train or no test rows; check the protocol")
    mos = np.asarray(mos, dtype=float)
    runs: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    if len(val):
        runs["train"] = (train, {"test": test, "val": val})
    else:
        if {"best_on_test", "last"} & set(rules):
            runs["train"] = (train, {"test": test})
        if "best_on_val" in rules:
            fit_rows, val_rows = carve_validation(train, val_fraction, config.seed)
            runs["train_minus_val"] = (fit_rows, {"val": val_rows, "test": test})
    plan = SelectionPlan(tuple(rules), list(runs), [], {}, {}, fresh is not None)
    for run_name, (fit_rows, eval_rows) in runs.items():
        torch.manual_seed(config.seed)  # context and head initialisation
        model = plan.models[run_name] = make_model()
        if fresh is not None:
            batches = ImageBatches([fresh.paths[r] for r in fit_rows], mos[fit_rows],
                                   fresh.transform, fresh.encode, config.batch_size,
                                   config.seed, fresh.num_workers, fresh.device, ids=fit_rows)
        else:
            batches = CachedFeatureBatches(features.training_views(fit_rows), mos[fit_rows],
                                           config.batch_size, config.seed)
        eval_sets = plan.eval_parts[run_name] = {
            name: EvalSet(features.test[torch.as_tensor(rows)], mos[rows])
            for name, rows in eval_rows.items()}
        ckpt = Path(checkpoint_dir) / f"{run_name}.safetensors" if checkpoint_dir else None
        desc = f"train {'CLIP-AGIQA' if getattr(model, 'prompt_learner', None) else 'image-only'} ({run_name})"
        plan.jobs.append((model, batches, eval_sets, config, ckpt, progress, desc))
    return plan


def fit_plans(plans: Sequence[SelectionPlan], parallel_runs: int = 1, cores: int | None = None,
              progress: bool = True) -> list[SelectionRun]:
    """Train every run of `plans` and return one `SelectionRun` per plan.

    With cached views the runs are independent and may train side by side
    (`parallel_runs`, `cores`: see `core.side_by_side`), the runs of several plans together,
    in the order given (a worker takes the next run when it is free); each equals the run
    trained alone with the worker's threads. Fresh views train here, one after another.
    """
    jobs = [job for plan in plans for job in plan.jobs]
    processes = 1 if any(plan.fresh for plan in plans) else side_by_side.worker_count(
        parallel_runs, len(jobs), _device_of(jobs[0][0]), cores)
    results = iter(side_by_side.run_side_by_side(_train_detached, jobs, processes, cores=cores,
                                                 desc="CLIP-AGIQA runs", progress=progress))
    out = []
    for plan in plans:
        run = SelectionRun({}, {}, {}, {})
        for run_name, (history, states, best_epochs) in zip(plan.run_names, results):
            model, eval_sets = plan.models[run_name], plan.eval_parts[run_name]
            run.histories[run_name] = history
            for rule in plan.rules:
                if rule in states and rule not in run.predictions:
                    state = tensors_from_bytes(states[rule])
                    model.load_trainable_state_dict(state)
                    run.predictions[rule] = predict_rows(model, eval_sets["test"].features)
                    run.best_epochs[rule] = best_epochs[rule]
                    run.states[rule] = state
        out.append(run)
    return out


def fit_selection_rules(make_model: Callable[[], nn.Module], features: ClipFeatures,
                        mos: Sequence[float], split: pd.Series, config: TrainConfig | None = None,
                        rules: Sequence[str] = SELECTION_RULES, val_fraction: float = 0.1,
                        checkpoint_dir: str | os.PathLike | None = None,
                        progress: bool = True, fresh: FreshViews | None = None,
                        parallel_runs: int = 1, cores: int | None = None) -> SelectionRun:
    """Train and predict the test rows under each selection rule.

    Training batches come from the cached augmented views of `features`, or with `fresh`
    from fresh random views encoded at every step (the released path); every evaluation uses
    the cached test view. A split with its own "val" rows needs one run. Without one (e.g.
    `clip_agiqa`), one run on all train rows gives `best_on_test` and `last`, and a second run
    on train minus a carved val part (`val_fraction`, seeded) gives `best_on_val`.
    `make_model` builds a fresh model. With cached views the two runs may train side by side
    (`parallel_runs`, `cores`: see `core.side_by_side`); each equals the run trained alone
    with the worker's threads.
    """
    plan = plan_selection_rules(make_model, features, mos, split, config, rules, val_fraction,
                                checkpoint_dir, progress, fresh)
    return fit_plans([plan], parallel_runs, cores, progress)[0]
