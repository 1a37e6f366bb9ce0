"""Training and evaluation of MA-AGIQA (and MANIQA alone) as the released `main.py` does it.

As released: Adam (lr 1e-5, weight decay 1e-5), batch 8 (shuffled, drop_last), 30 epochs,
CosineAnnealingLR(T_max=50, eta_min=0) stepped after EVERY ITERATION (so the learning rate
oscillates with a period of 100 iterations), seed 20, MSE on raw MOS. Training augmentation
(`data.augment`): with p=0.7 a rotation by 90/180/270 degrees, and with p=0.7 a "horizontal"
flip that is really vertical (`flip="as_released"`; `flip="horizontal"` is the fix). The
epoch with the best val SRCC + PLCC (raw Pearson) is tested once.

The released test loader uses shuffle=True and drop_last=True with batch 8, so 5 of the 597
AGIQA-3K test images are never scored. Here every test image is scored (`all_test`), and the
as-released figure (`as_released_drop_last`) is computed on the images that a
DataLoader(shuffle=True, drop_last=True, batch_size=8) seeded with the run's seed keeps. (In
the released run the dropped five depend on the global RNG state after training, which
cannot be reproduced; seeding the loader makes the choice reproducible.) The released val
loader also drops its last 298 % 8 = 2 images; here val uses all of them.

Profiles: `full` trains end to end on images (GPU). `lite` and `tiny` freeze the backbone and
train on its cached tokens (fp16); rotations and flips are applied to the cached token grid,
which approximates image-level augmentation (a CNN's feature map of a rotated image is only
roughly the rotated feature map). Their departures from the recipe are in `core.profiles`.

Runs are resumable at epoch level through `core.training.TrainingState`: `last.safetensors`
in the run folder holds weights, optimizer and scheduler state, history and the best
snapshot; each epoch reseeds from (seed, epoch), so a resumed run matches an uninterrupted
one. The fingerprint leaves the epoch count out, so a finished run can be extended.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.training import TrainingState
from agiqa_lib.evaluation.metrics import evaluate
from agiqa_lib.ma_agiqa.config import TrainConfig
from agiqa_lib.ma_agiqa.data import MAItems, PreparedData
from agiqa_lib.ma_agiqa.model import MAAGIQA, VARIANTS, ma_agiqa_config

EVALUATIONS = ("all_test", "as_released_drop_last")
SELECTION = "best_on_val"  # the released rule: best val SRCC + PLCC


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


@torch.inference_mode()
def predict(model: MAAGIQA, data: PreparedData, rows: np.ndarray, cfg: TrainConfig,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (and gate weights, [n, experts], when the variant has a gate) for `rows`."""
    model.eval()
    items = MAItems(data, rows, model.cfg.maniqa.grid, cfg.seed,
                    transform=model.backbone.transform(False))
    loader = DataLoader(items, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    scores, gates = [], []
    for x, sem, _, _ in tqdm(loader, desc="predict", disable=not progress, leave=False):
        out = _forward(model, x, sem, data.tokens is not None, cfg.device)
        scores.append(out.score.float().cpu())
        if out.gates is not None:
            gates.append(out.gates.float().cpu())
    score = torch.cat(scores).numpy() if scores else np.zeros(0)
    return score, (torch.cat(gates).numpy() if gates else None)


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
    seconds: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fingerprint(model: MAAGIQA, data: PreparedData, cfg: TrainConfig) -> str:
    """Hash of everything a resumed run must share with the run that saved the state.

    The epoch count is left out, so a finished run can be extended by asking for more epochs.
    """
    text = json.dumps([model.cfg.to_json(),
                       asdict(replace(cfg, epochs=0, device="", num_workers=0)),
                       data.dataset, data.protocol, data.df["name"].tolist(),
                       data.split.tolist(), data.df["mos"].round(6).tolist()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_run(model: MAAGIQA, data: PreparedData, cfg: TrainConfig,
              run_dir: str | Path | None = None, progress: bool = True) -> RunResult:
    """Train `model` on data's train rows, select the epoch on val, test it once.

    With `run_dir`, the run is checkpointed after every epoch and resumed from there.
    """
    start = time.perf_counter()
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
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max,
                                                           eta_min=cfg.eta_min)
    state = TrainingState(model, optimizer, scheduler, _fingerprint(model, data, cfg))
    last = Path(run_dir) / "last.safetensors" if run_dir is not None else None
    if last is not None:
        state.restore(last)
    items = MAItems(data, train_rows, model.cfg.maniqa.grid, cfg.seed,
                    augmentation=(cfg.aug_prob, cfg.flip),
                    transform=model.backbone.transform(False))
    mos = data.df["mos"].to_numpy(dtype=float)
    desc = f"{model.cfg.variant} seed {cfg.seed}"
    for epoch in tqdm(range(state.epochs_done, cfg.epochs), desc=desc, unit="epoch",
                      initial=state.epochs_done, total=cfg.epochs, disable=not progress):
        _seed_everything(cfg.seed * 1000 + epoch)
        items.epoch = epoch
        loader = DataLoader(items, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        model.train()
        losses, preds, labels = [], [], []
        for x, sem, y, _ in loader:
            out = _forward(model, x, sem, tokens_mode, cfg.device)
            loss = torch.nn.functional.mse_loss(out.score, y.to(cfg.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            preds.append(out.score.detach().float().cpu().numpy())
            labels.append(y.numpy())
        val_pred, _ = predict(model, data, val_rows, cfg)
        val_srcc = float(stats.spearmanr(val_pred, mos[val_rows])[0])
        val_plcc = float(stats.pearsonr(val_pred, mos[val_rows])[0])
        p, t = np.concatenate(preds), np.concatenate(labels)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               "train_srcc": float(stats.spearmanr(p, t)[0]), "val_srcc": val_srcc,
               "val_plcc": val_plcc, "lr": scheduler.get_last_lr()[0]}
        state.record(row, {SELECTION: val_srcc + val_plcc})
        if last is not None:
            state.save(last)
    if SELECTION in state.snapshots:
        state.load_weights(state.snapshots[SELECTION])
    best_epoch = state.best_epochs().get(SELECTION, -1)
    return _test(model, data, cfg, state.history, best_epoch, test_rows,
                 time.perf_counter() - start)


def _test(model: MAAGIQA, data: PreparedData, cfg: TrainConfig, history: list[dict],
          best_epoch: int, test_rows: np.ndarray, seconds: float) -> RunResult:
    pred, gates = predict(model, data, test_rows, cfg)
    mos = data.df["mos"].to_numpy(dtype=float)[test_rows]
    groups = data.df["generator"].to_numpy()[test_rows]
    kept = as_released_test_indices(len(test_rows), cfg.batch_size, cfg.seed)
    metrics = {"all_test": evaluate(pred, mos, groups, ci=True, seed=cfg.seed),
               "as_released_drop_last": evaluate(pred[kept], mos[kept], groups[kept], ci=True,
                                                 seed=cfg.seed)}
    predictions = pd.DataFrame({"name": data.df["name"].to_numpy()[test_rows],
                                "generator": groups, "mos": mos, "pred": pred,
                                "as_released_kept": np.isin(np.arange(len(test_rows)), kept)})
    if gates is not None:
        for j, name in enumerate(model.fusion.expert_names):
            predictions[f"gate_{name}"] = gates[:, j]
    return RunResult(model.cfg.variant, cfg.seed, pd.DataFrame(history), best_epoch, metrics,
                     predictions, model, seconds)


def new_model(data: PreparedData, variant: str, seed: int, clean_tablock: bool = False,
              backbone_pretrained: bool = True) -> MAAGIQA:
    """A freshly initialised (seeded) model of `variant` for this data's profile."""
    if variant not in VARIANTS:
        raise AgiqaError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    cfg = ma_agiqa_config(data.profile, variant, data.in_channels, data.semantic_dim,
                          clean_tablock, data.mllm_model_id if data.profile == "full" else None)
    backbone = create_iqa_backbone(data.profile, pretrained=backbone_pretrained)
    _seed_everything(seed)
    return MAAGIQA(cfg, backbone)
