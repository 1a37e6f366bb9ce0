"""Training and evaluation of MA-AGIQA (and MANIQA alone) as the released `main.py` does it.

As released: Adam (lr 1e-5, weight decay 1e-5), batch 8 (shuffled, drop_last), 30 epochs,
CosineAnnealingLR(T_max=50, eta_min=0) stepped after EVERY ITERATION (so the learning rate
oscillates with a period of 100 iterations), seed 20, MSE on raw MOS. Training augmentation
(`data.augment`): with p=0.7 a rotation by 90/180/270 degrees, and with p=0.7 a "horizontal"
flip that is really vertical (`flip="as_released"`; `flip="horizontal"` is the fix). The
epoch with the best val SRCC + PLCC (raw Pearson) is tested once. Images (`full`) are read and
resized as the model's config says (`resize`: the released OpenCV INTER_CUBIC path by default
for `full`, see `backbones.iqa_backbone`). The release trains in fp32 (no autocast/GradScaler
in `main.py`), and so does this loop.

The released test loader uses shuffle=True and drop_last=True with batch 8, so 5 of the 597
AGIQA-3K test images are never scored. Here every test image is scored (`all_test`), and the
as-released figure (`as_released_drop_last`) is computed on the images that a
DataLoader(shuffle=True, drop_last=True, batch_size=8) seeded with the run's seed keeps. (In
the released run the dropped five depend on the global RNG state after training, which
cannot be reproduced; seeding the loader makes the choice reproducible.)

Epoch selection (`TrainConfig.val_selection`): ``corrected`` (the default; selection
`best_on_val`) scores every val image and keeps the epoch with the best SRCC + PLCC, whatever
its sign. ``as_released`` (selection `best_on_val_as_released`) reproduces the released
validation: the val loader (`shuffle=False, drop_last=True`, batch 8, `main.py:264-265`) reads
the val rows in the split's shuffled order and drops the last partial batch (298 % 8 = 2
AGIQA-3K images), and the best score starts at 0 (`main_score = 0`, `main.py:289`; `if rho_s +
rho_p > main_score`, `main.py:301`), so an epoch whose val SRCC + PLCC is <= 0 is never chosen.
When no epoch beats 0 the released run saves no checkpoint and its test step fails; here the
last epoch is tested and the run says so (`RunResult.notes`).

Profiles: `full` trains end to end on images (GPU). `lite` and `tiny` freeze the backbone and
train on its cached tokens (fp16); rotations and flips are applied to the cached token grid,
which approximates image-level augmentation (a CNN's feature map of a rotated image is only
roughly the rotated feature map). Their departures from the recipe are in `core.profiles`.

Runs are resumable at epoch level through `core.training.TrainingState`: `last.safetensors`
in the run folder holds weights, optimizer and scheduler state, history and the best
snapshot; each epoch reseeds from (seed, epoch), so a resumed run matches an uninterrupted
one. The fingerprint leaves the epoch count out, so a finished run can be extended.

Launched on several processes (`accelerate launch` / `torchrun`, `core.distributed`), the
trainable model is wrapped in DDP by accelerate and each epoch follows the single-process one:
the same batches of 8 in the same order (the loader's generator seeded from (seed, epoch)),
each rank loading (and augmenting, seeded per (seed, epoch, row) as in one process) only its
slice of every batch, optionally split further into micro-batches (gradient accumulation);
each slice's loss is scaled so that the averaged gradient is the batch's, and Adam and the
per-iteration cosine schedule step once per batch of 8. Validation and test score each rank's
slice of the rows, gathered in row order (every image once, no padding), and every rank
computes the same metrics from them; training state is written by rank 0 (`TrainingState`).
Training stays fp32 as released. Dropout and drop-path masks differ from a one-process run,
since each rank draws them for its own rows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch.utils.data import DataLoader

from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
from agiqa_lib.core import distributed
from agiqa_lib.core.distributed import DataParallel
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.progress import progress_bar
from agiqa_lib.core.training import TrainingState
from agiqa_lib.evaluation.metrics import evaluate
from agiqa_lib.ma_agiqa.config import TrainConfig
from agiqa_lib.ma_agiqa.data import MAItems, PreparedData
from agiqa_lib.ma_agiqa.model import MAAGIQA, VARIANTS, ma_agiqa_config

EVALUATIONS = ("all_test", "as_released_drop_last")
SELECTION = "best_on_val"  # best val SRCC + PLCC on every val image (val_selection corrected)
SELECTIONS = {"corrected": SELECTION, "as_released": "best_on_val_as_released"}


def as_released_test_indices(n: int, batch_size: int = 8, seed: int = 20) -> np.ndarray:
    """Positions (0..n-1) that a shuffled drop_last DataLoader seeded with `seed` scores."""
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    return np.sort(np.concatenate([b.numpy() for b in loader])) if len(loader) else \
        np.zeros(0, dtype=int)


def _forward(model: MAAGIQA, x: torch.Tensor, sem: torch.Tensor, tokens: bool, device: str):
    x, sem = x.to(device), sem.to(device)
    semantic = sem if model.needs_semantic else None
    return model.forward_tokens(x, semantic) if tokens else model(x, semantic)


def adam(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Adam:
    """The released Adam (lr, weight decay), updating all tensors in one `foreach` pass: the
    same arithmetic as PyTorch's CPU default of one tensor at a time (equal to the bit,
    `tests/test_ma_training.py`), with its 160 small-tensor updates of a `lite` step in 6.6-8.4
    instead of 9.2-11.9 ms (one thread; the fused kernel, 2.6 ms, rounds differently)."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@torch.inference_mode()
def predict(model: MAAGIQA, data: PreparedData, rows: np.ndarray, cfg: TrainConfig,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (and gate weights, [n, experts], when the variant has a gate) for `rows`."""
    model.eval()
    items = MAItems(data, rows, model.cfg.maniqa.grid, cfg.seed,
                    transform=model.image_transform())
    loader = DataLoader(items, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    scores, gates = [], []
    for x, sem, _, _ in progress_bar(loader, desc="predict", disable=not progress, leave=False):
        out = _forward(model, x, sem, data.tokens is not None, cfg.device)
        scores.append(out.score.float().cpu())
        if out.gates is not None:
            gates.append(out.gates.float().cpu())
    score = torch.cat(scores).numpy() if scores else np.zeros(0)
    return score, (torch.cat(gates).numpy() if gates else None)


def predict_rows(model: MAAGIQA, data: PreparedData, rows: np.ndarray, cfg: TrainConfig
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """`predict` of `rows`; in a launched run each process scores its slice of the rows and the
    slices are gathered in row order (each row scored once)."""
    group = distributed.current()
    if not group.distributed:
        return predict(model, data, rows, cfg)
    return group.gather_shards(predict(model, data, group.shard(rows), cfg))


class _Scores(torch.nn.Module):
    """The training forward (input, semantic vectors -> scores) as a module, for DDP to wrap."""

    def __init__(self, model: MAAGIQA, tokens: bool) -> None:
        super().__init__()
        self.model, self.tokens = model, tokens

    def forward(self, x: torch.Tensor, sem: torch.Tensor) -> torch.Tensor:
        semantic = sem if self.model.needs_semantic else None
        out = self.model.forward_tokens(x, semantic) if self.tokens else self.model(x, semantic)
        return out.score


@dataclass
class RunResult:
    """Outcome of one (variant, seed) run: history, chosen epoch, test metrics, predictions."""

    variant: str
    seed: int
    history: pd.DataFrame
    best_epoch: int
    metrics: dict[str, dict[str, Any]]      # evaluation name -> evaluate() dict
    predictions: pd.DataFrame               # test rows: name, generator, mos, pred, gate_*
    model: MAAGIQA
    seconds: float                          # wall time of the run, over every resumed session
    selection: str = SELECTION              # best_on_val or best_on_val_as_released
    notes: list[str] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fingerprint(model: MAAGIQA, data: PreparedData, cfg: TrainConfig) -> str:
    """Hash of everything a resumed run must share with the run that saved the state.

    The epoch count is left out, so a finished run can be extended by asking for more epochs.
    Settings added later are left out while they hold their defaults, so the states of
    earlier runs stay resumable.
    """
    model_cfg = json.loads(model.cfg.to_json())
    for key, default in (("resize", "pil"), ("weights", "pretrained"),
                         ("semantic_source", "mllm"), ("image_size", 224)):
        if model_cfg.get(key) == default:
            model_cfg.pop(key)
    recipe = asdict(replace(cfg, epochs=0, device="", num_workers=0))
    for key, default in (("val_selection", "corrected"), ("max_steps_per_epoch", None)):
        if recipe.get(key) == default:
            recipe.pop(key)
    text = json.dumps([json.dumps(model_cfg), recipe,
                       data.dataset, data.protocol, data.df["name"].tolist(),
                       data.split.tolist(), data.df["mos"].round(6).tolist()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_run(model: MAAGIQA, data: PreparedData, cfg: TrainConfig,
              run_dir: str | Path | None = None, progress: bool = True) -> RunResult:
    """Train `model` on data's train rows, select the epoch on val, test it once.

    With `run_dir`, the run is checkpointed after every epoch and resumed from there. In a
    launched run every rank calls this (see the module docstring).
    """
    start = time.perf_counter()
    group = distributed.current()
    if group.distributed:  # this rank's device (cuda:<local_rank> or the CPU)
        cfg = replace(cfg, device=str(group.device_for(cfg.device)))
    tokens_mode = data.tokens is not None
    if model.needs_semantic and data.semantic is None:
        raise AgiqaError(f"variant {model.cfg.variant!r} needs semantic vectors; prepare the "
                         "data with a config whose variants fuse them")
    train_rows, val_rows, test_rows = data.rows("train"), data.rows("val"), data.rows("test")
    if len(train_rows) < cfg.batch_size or len(val_rows) < 3 or len(test_rows) < 3:
        raise AgiqaError(f"split {data.protocol!r} of {data.dataset!r} is too small to train "
                         f"({len(train_rows)}/{len(val_rows)}/{len(test_rows)} train/val/test)")
    model.to(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(params, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max,
                                                           eta_min=cfg.eta_min)
    state = TrainingState(model, optimizer, scheduler, _fingerprint(model, data, cfg))
    last = Path(run_dir) / "last.safetensors" if run_dir is not None else None
    if last is not None:
        state.restore(last)
    earlier = state.seconds  # a resumed run's time before this session
    items = MAItems(data, train_rows, model.cfg.maniqa.grid, cfg.seed,
                    augmentation=(cfg.aug_prob, cfg.flip),
                    transform=model.image_transform())
    mos = data.df["mos"].to_numpy(dtype=float)
    selection = SELECTIONS[cfg.val_selection]
    as_released = cfg.val_selection == "as_released"
    # the released val loader: split order, last partial batch dropped (main.py:264-265)
    val_eval = data.released_val_rows(cfg.batch_size) if as_released else val_rows
    desc = f"{model.cfg.variant} seed {cfg.seed}"
    parallel = DataParallel(_Scores(model, tokens_mode)) if DataParallel.wanted(group) else None
    for epoch in progress_bar(range(state.epochs_done, cfg.epochs), desc=desc, unit="epoch",
                              initial=state.epochs_done, total=cfg.epochs,
                              disable=not progress or not group.is_main):
        _seed_everything(cfg.seed * 1000 + epoch)
        items.epoch = epoch
        model.train()
        if parallel is not None:
            losses, p, t = _parallel_epoch(parallel, items, optimizer, scheduler, cfg, epoch)
        else:
            loader = DataLoader(items, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                num_workers=cfg.num_workers,
                                generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            losses, preds, labels = [], [], []
            for x, sem, y, _ in itertools.islice(loader, cfg.max_steps_per_epoch):  # None: all
                out = _forward(model, x, sem, tokens_mode, cfg.device)
                loss = torch.nn.functional.mse_loss(out.score, y.to(cfg.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                preds.append(out.score.detach().float().cpu().numpy())
                labels.append(y.numpy())
            p, t = np.concatenate(preds), np.concatenate(labels)
        val_srcc, val_plcc = _val_scores(model, data, val_eval, cfg, mos)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               "train_srcc": _corr(stats.spearmanr, p, t), "val_srcc": val_srcc,
               "val_plcc": val_plcc, "lr": scheduler.get_last_lr()[0]}
        score = val_srcc + val_plcc
        if as_released and not score > 0:  # the released best score starts at 0
            score = float("nan")  # never an improvement
        state.record(row, {selection: score})
        state.seconds = earlier + time.perf_counter() - start
        if last is not None:
            state.save(last)
    if parallel is not None:
        parallel.close()
    notes = []
    if selection in state.snapshots:
        state.load_weights(state.snapshots[selection])
        best_epoch = state.best_epochs()[selection]
    else:
        best_epoch = state.epochs_done
        notes.append(f"no epoch had a val SRCC + PLCC above 0 (the released threshold): the "
                     f"released run would have saved no checkpoint; the last epoch "
                     f"({best_epoch}) was tested" if as_released else
                     f"no epoch had a finite val score; the last epoch ({best_epoch}) was tested")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
    result = _test(model, data, cfg, state.history, best_epoch, test_rows,
                   earlier + time.perf_counter() - start)
    result.selection, result.notes = selection, notes + result.notes
    return result


def _parallel_epoch(parallel: DataParallel, items: MAItems, optimizer: torch.optim.Optimizer,
                    scheduler: Any, cfg: TrainConfig, epoch: int
                    ) -> tuple[list[float], np.ndarray, np.ndarray]:
    """One epoch of the launched (or accumulating) run: the batches of the one-process loader,
    this process's micro-batches of each; returns per-batch losses, train predictions and MOS
    of every process (in rank order; the correlations do not depend on the order)."""
    order = DataLoader(range(len(items)), batch_size=cfg.batch_size, shuffle=True,
                       drop_last=True,  # the index batches the one-process loader draws
                       generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    plan = [(len(batch), [batch[p].tolist() for p in parallel.parts(len(batch))])
            for batch in itertools.islice(order, cfg.max_steps_per_epoch)]
    loader = iter(DataLoader(items, batch_sampler=[m for _, micro in plan for m in micro],
                             num_workers=cfg.num_workers, generator=torch.Generator()))
    shares, preds, labels = [], [], []
    for n, micro in plan:
        optimizer.zero_grad()
        share = 0.0
        for i in range(len(micro)):
            x, sem, y, _ = next(loader)
            with parallel.sync(last=i == len(micro) - 1):
                score = parallel.module(x.to(cfg.device), sem.to(cfg.device))
                loss = torch.nn.functional.mse_loss(score, y.to(cfg.device))
                (loss * parallel.loss_scale(len(y), n)).backward()
            share += loss.item() * len(y) / n
            preds.append(score.detach().float().cpu().numpy())
            labels.append(y.numpy())
        optimizer.step()
        scheduler.step()
        shares.append(share)
    return (parallel.sum_steps(shares), parallel.gather_values(np.concatenate(preds)),
            parallel.gather_values(np.concatenate(labels)))


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    """A correlation, NaN when undefined (fewer than 2 values or a constant input)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


def _val_scores(model: MAAGIQA, data: PreparedData, rows: np.ndarray, cfg: TrainConfig,
                mos: np.ndarray) -> tuple[float, float]:
    """Val SRCC and PLCC (raw Pearson) of `rows` (NaN when undefined)."""
    if len(rows) == 0:
        return float("nan"), float("nan")
    pred, _ = predict_rows(model, data, rows, cfg)
    return _corr(stats.spearmanr, pred, mos[rows]), _corr(stats.pearsonr, pred, mos[rows])


def _test(model: MAAGIQA, data: PreparedData, cfg: TrainConfig, history: list[dict],
          best_epoch: int, test_rows: np.ndarray, seconds: float) -> RunResult:
    pred, gates = predict_rows(model, data, test_rows, cfg)
    mos = data.df["mos"].to_numpy(dtype=float)[test_rows]
    groups = data.df["generator"].to_numpy()[test_rows]
    kept = as_released_test_indices(len(test_rows), cfg.batch_size, cfg.seed)
    metrics = {"all_test": evaluate(pred, mos, groups, ci=True, seed=cfg.seed)}
    notes = []
    if len(kept) >= 3:
        metrics["as_released_drop_last"] = evaluate(pred[kept], mos[kept], groups[kept],
                                                    ci=True, seed=cfg.seed)
    else:
        notes.append(f"the as-released test loader (batch {cfg.batch_size}, drop_last) keeps "
                     f"{len(kept)} of {len(test_rows)} test images: too few to evaluate")
    predictions = pd.DataFrame({"name": data.df["name"].to_numpy()[test_rows],
                                "generator": groups, "mos": mos, "pred": pred,
                                "as_released_kept": np.isin(np.arange(len(test_rows)), kept)})
    if gates is not None:
        for j, name in enumerate(model.fusion.expert_names):
            predictions[f"gate_{name}"] = gates[:, j]
    return RunResult(model.cfg.variant, cfg.seed, pd.DataFrame(history), best_epoch, metrics,
                     predictions, model, seconds, notes=notes)


def new_model(data: PreparedData, variant: str, seed: int, clean_tablock: bool = False,
              backbone_pretrained: bool = True) -> MAAGIQA:
    """A freshly initialised (seeded) model of `variant` for this data's profile.

    The backbone has the profile's weights (`full`: the hub ViT-B/8, or the data's
    `vit_checkpoint`), random ones when the data says `weights="random"` or
    `backbone_pretrained=False`. The config records the data's resize, weights and the
    source of its semantic vectors (what `load_scorer` needs later).
    """
    if variant not in VARIANTS:
        raise AgiqaError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    cfg = ma_agiqa_config(data.profile, variant, data.in_channels, data.semantic_dim,
                          clean_tablock, data.mllm_source, resize=data.resize,
                          weights=data.weights, semantic_source=data.semantic_source,
                          image_size=data.image_size)
    pretrained = backbone_pretrained and data.weights != "random"
    checkpoint = data.vit_checkpoint if pretrained and data.profile == "full" else None
    backbone = create_iqa_backbone(data.profile, pretrained=pretrained, checkpoint=checkpoint)
    _seed_everything(seed)
    return MAAGIQA(cfg, backbone)
