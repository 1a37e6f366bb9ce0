"""Training and evaluation of MA-AGIQA (and MANIQA alone) as the released `main.py` does it.

As released: Adam (lr 1e-5, weight decay 1e-5), batch 8 (shuffled, drop_last), 30 epochs,
CosineAnnealingLR(T_max=50, eta_min=0) stepped after EVERY ITERATION (so the learning rate
oscillates with a period of 100 iterations), seed 20, MSE on raw MOS. Training augmentation:
with p=0.7 a rotation by 90/180/270 degrees (probabilities 0.33/0.33/0.34), and with p=0.7 a
"horizontal" flip that is really vertical (`np.fliplr` on a C x H x W array flips H):
`flip="as_released"` reproduces it, `flip="horizontal"` flips W. The epoch with the best
val SRCC + PLCC (raw Pearson) is tested once.

The released test loader uses shuffle=True and drop_last=True with batch 8, so 5 of the 597
AGIQA-3K test images are never scored. Here every test image is scored (`all_test`), and the
as-released figure (`as_released_drop_last`) is computed on the images that a
DataLoader(shuffle=True, drop_last=True, batch_size=8) seeded with the run's seed keeps. (In
the released run the dropped five depend on the global RNG state after training, which
cannot be reproduced; seeding the loader makes the choice reproducible.) The released val
loader also drops its last 298 % 8 = 2 images; here val uses all of them.

Profiles: `full` trains end to end on images (GPU). `lite` and `tiny` freeze the backbone and
train on its cached tokens (fp16, `agiqa_lib.core.features`); rotations and flips are applied to
the cached token grid, which approximates image-level augmentation (a CNN's feature map of a
rotated image is only roughly the rotated feature map). Epochs and learning rate for `lite`
are in `PROFILE_TRAINING` (see there for why).

Runs are resumable at epoch level: `last.safetensors` in the run folder holds model,
optimizer and scheduler state plus the history; a killed run continues after its last
finished epoch. Each epoch reseeds from (seed, epoch), so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from scipy import stats
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import load_tensors, open_rgb, save_tensors
from agiqa_lib.evaluation.metrics import evaluate
from agiqa_lib.ma_agiqa.model import MAAGIQA, VARIANTS, ma_agiqa_config, save_checkpoint

log = logging.getLogger(__name__)

FLIPS = ("as_released", "horizontal")
FAST_LIMIT = 96  # rows kept by notebook 04's `fast` mode (smoke tests)
EVALUATIONS = ("all_test", "as_released_drop_last")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are the released ones."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 1e-5
    t_max: int = 50                  # CosineAnnealingLR period, in iterations
    eta_min: float = 0.0
    aug_prob: float = 0.7
    flip: str = "as_released"        # or "horizontal" (the corrected flip)
    seed: int = 20
    eval_batch_size: int = 32
    num_workers: int = 0             # image loading workers (full profile)
    device: str = "cpu"


# Per-profile departures from the released TrainConfig, and why:
# lite trains only the small MANIQA + fusion heads on frozen cached tokens, from random
# initialisation; at the released lr 1e-5 (meant for fine-tuning a pretrained ViT) such heads
# barely move in a CPU budget (measured on a 512-image subset: train loss 0.51 vs 0.13 after
# 4 epochs at 1e-5 vs 1e-4), so lite uses lr 1e-4 and 10 epochs (~40 s each on 2 idle cores).
# tiny exists for tests: 2 epochs.
PROFILE_TRAINING: dict[str, dict[str, Any]] = {
    "full": {},
    "lite": dict(epochs=10, lr=1e-4),
    "tiny": dict(epochs=2, lr=1e-3),
}


def train_config(profile: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a profile, with `overrides` (None values ignored) applied."""
    if profile not in PROFILE_TRAINING:
        raise AgiqaError(f"unknown profile {profile!r}; choose one of {sorted(PROFILE_TRAINING)}")
    cfg = replace(TrainConfig(), **{**PROFILE_TRAINING[profile],
                                    **{k: v for k, v in overrides.items() if v is not None}})
    if cfg.flip not in FLIPS:
        raise AgiqaError(f"flip must be one of {FLIPS}, got {cfg.flip!r}")
    return cfg


# ----------------------------------------------------------------------------- augmentation


def augment(x: torch.Tensor, rng: np.random.Generator, prob: float = 0.7,
            flip: str = "as_released") -> torch.Tensor:
    """Released train augmentation of one [C, H, W] image or token grid.

    With probability `prob` rotate by k * 90 degrees, k in {1, 2, 3} w.p. 0.33/0.33/0.34
    (`np.rot90(x, k, axes=(1, 2))`); then with probability `prob` flip: over H as released
    ("horizontal" in the code, vertical in effect), or over W for `flip="horizontal"`.
    """
    if rng.random() < prob:
        x = torch.rot90(x, int(rng.choice([1, 2, 3], p=[0.33, 0.33, 0.34])), dims=(1, 2))
    if rng.random() < prob:
        x = torch.flip(x, dims=(1,) if flip == "as_released" else (2,))
    return x


def as_released_test_indices(n: int, batch_size: int = 8, seed: int = 20) -> np.ndarray:
    """Positions (0..n-1) that a shuffled drop_last DataLoader seeded with `seed` scores."""
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    return np.sort(np.concatenate([b.numpy() for b in loader])) if len(loader) else \
        np.zeros(0, dtype=int)


# ----------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """One dataset ready for training: rows, split, model inputs and semantic vectors.

    `tokens` [N, C, grid * grid] fp16 for frozen-backbone profiles, None for `full` (images
    are read from `df.path`). `semantic` [N, 2, D] (None when only MANIQA alone is trained).
    """

    dataset: str
    profile: str
    protocol: str
    df: pd.DataFrame
    split: pd.Series
    tokens: torch.Tensor | None
    semantic: torch.Tensor | None
    mllm_model_id: str | None = None
    mllm_is_stand_in: bool = False
    in_channels: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def rows(self, part: str) -> np.ndarray:
        """Row positions of one part ("train", "val", "test")."""
        return np.flatnonzero(self.split.to_numpy() == part)

    @property
    def semantic_dim(self) -> int | None:
        """D of the semantic vectors."""
        return None if self.semantic is None else int(self.semantic.shape[-1])


def prepare_data(dataset: str = "demo", root: str | os.PathLike | None = None,
                 profile: str = "lite", protocol: str = "ma_agiqa",
                 split_seed: int | None = None, need_semantic: bool = True,
                 mllm_model_id: str | None = None, limit: int | None = None,
                 device: str = "cpu", progress: bool = True) -> PreparedData:
    """Load a dataset, split it, and compute (cached) backbone tokens and MLLM vectors.

    `limit` keeps N rows evenly spaced over the file (quick looks, every generator kept);
    every other row choice is the protocol's.
    """
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.core.features import describe_transform, extract_features
    from agiqa_lib.core.cache import CacheKey
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone
    from agiqa_lib.data.splits import make_split

    df = load_dataset(dataset, root)
    if limit is not None:
        df = df.iloc[np.linspace(0, len(df) - 1, min(limit, len(df))).astype(int)]
        df = df.reset_index(drop=True)
    split = make_split(df, protocol, seed=split_seed)
    timings: dict[str, float] = {}
    tokens = None
    backbone = create_iqa_backbone(profile, pretrained=profile != "full")  # full: see new_model
    if profile != "full":
        probe = MAAGIQA(ma_agiqa_config(profile, "maniqa", backbone.out_channels), backbone)
        probe.eval()
        transform = backbone.transform(False)
        model_id = getattr(backbone, "model_id", f"iqa_backbone:{profile}")
        key = CacheKey(dataset=dataset, model_id=f"{model_id}/pool{probe.cfg.maniqa.grid}",
                       profile=profile, transform=describe_transform(transform))
        start = time.perf_counter()
        tokens = extract_features([str(p) for p in df["path"]], probe.tokens, transform, key,
                                  batch_size=16, fp16=True, progress=progress, device=device)
        timings["tokens_s"] = time.perf_counter() - start
    semantic, stand_in, mllm_id = None, False, None
    if need_semantic:
        from agiqa_lib.backbones.mllm import create_mllm
        from agiqa_lib.ma_agiqa.semantic import extract_semantic_vectors

        encoder = create_mllm(profile, model_id=mllm_model_id if profile == "full" else None,
                              device=device)
        start = time.perf_counter()
        semantic = extract_semantic_vectors(df, encoder, dataset=dataset, progress=progress)
        timings["semantic_s"] = time.perf_counter() - start
        stand_in, mllm_id = bool(getattr(encoder, "is_stand_in", False)), encoder.model_id
    return PreparedData(dataset, profile, protocol, df, split, tokens, semantic,
                        mllm_model_id=mllm_id if profile == "full" else None,
                        mllm_is_stand_in=stand_in, in_channels=backbone.out_channels,
                        timings=timings)


class _Items(Dataset):
    """(input, semantic, mos, row) for some rows; augments when `train` (seeded per epoch/row)."""

    def __init__(self, data: PreparedData, rows: np.ndarray, cfg: TrainConfig, grid: int,
                 train: bool, transform=None):
        self.data, self.rows, self.cfg, self.grid = data, rows, cfg, grid
        self.train, self.transform, self.epoch = train, transform, 0
        self.mos = torch.tensor(data.df["mos"].to_numpy(dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        if self.data.tokens is not None:
            x = self.data.tokens[row].float().unflatten(1, (self.grid, self.grid))
        else:
            x = self.transform(open_rgb(self.data.df["path"].iloc[row]))
        if self.train:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, row])
            x = augment(x, rng, self.cfg.aug_prob, self.cfg.flip)
        if self.data.tokens is not None:
            x = x.flatten(1)
        sem = self.data.semantic[row] if self.data.semantic is not None else torch.zeros(0)
        return x, sem, self.mos[row], row


def _forward(model: MAAGIQA, x: torch.Tensor, sem: torch.Tensor, tokens: bool, device: str):
    x, sem = x.to(device), sem.to(device)
    semantic = sem if model.needs_semantic else None
    return model.forward_tokens(x, semantic) if tokens else model(x, semantic)


@torch.inference_mode()
def predict(model: MAAGIQA, data: PreparedData, rows: np.ndarray, cfg: TrainConfig,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (and gate weights, [n, experts], when the variant has a gate) for `rows`."""
    model.eval()
    items = _Items(data, rows, cfg, model.cfg.maniqa.grid, train=False,
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


# ----------------------------------------------------------------------------- training


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


def _save_state(path: Path, model: MAAGIQA, optimizer: torch.optim.Optimizer,
                scheduler, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().clone()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"]),
            "scheduler": json.dumps(scheduler.state_dict())}
    save_tensors(path, tensors, meta)


def _saved_state(path: Path) -> dict[str, Any]:
    """The run state stored in a `last.safetensors` ({} when unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("state", "{}"))
    except Exception:  # a foreign or damaged file is simply not resumed from
        return {}


def _load_state(path: Path, model: MAAGIQA, optimizer: torch.optim.Optimizer,
                scheduler) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state,
                               "param_groups": json.loads(meta["param_groups"])})
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    return json.loads(meta["state"])


def train_run(model: MAAGIQA, data: PreparedData, cfg: TrainConfig,
              run_dir: str | os.PathLike | None = None, progress: bool = True) -> RunResult:
    """Train `model` on data's train rows, select the epoch on val, test it once.

    With `run_dir`, the run is checkpointed after every epoch and resumed from there.
    """
    start = time.perf_counter()
    tokens_mode = data.tokens is not None
    if model.needs_semantic and data.semantic is None:
        raise AgiqaError(f"variant {model.cfg.variant!r} needs semantic vectors: call "
                         "prepare_data(..., need_semantic=True)")
    model.to(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max,
                                                           eta_min=cfg.eta_min)
    train_rows, val_rows, test_rows = data.rows("train"), data.rows("val"), data.rows("test")
    if len(train_rows) < cfg.batch_size or len(val_rows) < 3 or len(test_rows) < 3:
        raise AgiqaError(f"split {data.protocol!r} of {data.dataset!r} is too small to train "
                         f"({len(train_rows)}/{len(val_rows)}/{len(test_rows)} train/val/test)")
    grid = model.cfg.maniqa.grid
    items = _Items(data, train_rows, cfg, grid, train=True,
                   transform=model.backbone.transform(False))
    mos = data.df["mos"].to_numpy(dtype=float)

    run_dir = Path(run_dir) if run_dir is not None else None
    fingerprint = _fingerprint(model, data, cfg)
    state: dict[str, Any] = {"fingerprint": fingerprint, "epochs_done": 0, "history": [],
                             "best_score": -float("inf"), "best_epoch": -1}
    last = run_dir / "last.safetensors" if run_dir else None
    best = run_dir / "best.safetensors" if run_dir else None
    best_weights: dict[str, torch.Tensor] | None = None
    if last is not None and last.exists():
        if _saved_state(last).get("fingerprint") == fingerprint:
            state = _load_state(last, model, optimizer, scheduler)
            log.info("resuming %s after epoch %d", run_dir, state["epochs_done"])
        else:
            log.warning("%s belongs to another run (config or data changed); starting over",
                        last)
    for epoch in range(state["epochs_done"], cfg.epochs):
        _seed_everything(cfg.seed * 1000 + epoch)
        items.epoch = epoch
        loader = DataLoader(items, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        model.train()
        losses, preds, labels = [], [], []
        bar = tqdm(loader, desc=f"{model.cfg.variant} seed {cfg.seed} epoch {epoch + 1}/"
                   f"{cfg.epochs}", disable=not progress, leave=False)
        for x, sem, y, _ in bar:
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
        state["history"].append(row)
        score = val_srcc + val_plcc
        if np.isfinite(score) and score > state["best_score"]:
            state["best_score"], state["best_epoch"] = float(score), epoch + 1
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if best is not None:
                save_tensors(best, best_weights, {"epoch": str(epoch + 1)})
        state["epochs_done"] = epoch + 1
        if last is not None:
            _save_state(last, model, optimizer, scheduler, state)
        if progress:
            log.info("epoch %d: loss %.4f val SRCC %.4f PLCC %.4f", epoch + 1, row["train_loss"],
                     val_srcc, val_plcc)
    if best_weights is None and state["best_epoch"] > 0 and best is not None:
        best_weights = load_tensors(best)
    if best_weights is not None:
        model.load_state_dict(best_weights)
    return _test(model, data, cfg, state, test_rows, time.perf_counter() - start)


def _test(model: MAAGIQA, data: PreparedData, cfg: TrainConfig, state: dict[str, Any],
          test_rows: np.ndarray, seconds: float) -> RunResult:
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
        names = model.fusion.expert_names
        for j, name in enumerate(names):
            predictions[f"gate_{name}"] = gates[:, j]
    return RunResult(model.cfg.variant, cfg.seed, pd.DataFrame(state["history"]),
                     state["best_epoch"], metrics, predictions, model, seconds)


def new_model(data: PreparedData, variant: str, seed: int, clean_tablock: bool = False,
              backbone_pretrained: bool | None = None) -> MAAGIQA:
    """A freshly initialised (seeded) model of `variant` for this data's profile."""
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

    if variant not in VARIANTS:
        raise AgiqaError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    pretrained = True if backbone_pretrained is None else backbone_pretrained
    cfg = ma_agiqa_config(data.profile, variant, data.in_channels, data.semantic_dim,
                          clean_tablock, data.mllm_model_id)
    backbone = create_iqa_backbone(data.profile, pretrained=pretrained)
    _seed_everything(seed)
    return MAAGIQA(cfg, backbone)


# ----------------------------------------------------------------------------- studies


@dataclass
class StudyResult:
    """All runs of a study plus the summary table (one row per variant x seed x evaluation)."""

    data: PreparedData
    runs: list[RunResult]
    table: pd.DataFrame

    def run(self, variant: str, seed: int | None = None) -> RunResult:
        """The run of `variant` (first seed unless given)."""
        for r in self.runs:
            if r.variant == variant and (seed is None or r.seed == seed):
                return r
        raise KeyError(f"no run of variant {variant!r} seed {seed}")


def result_rows(run: RunResult, data: PreparedData) -> list[dict[str, Any]]:
    """Results-file records of one run (one per evaluation)."""
    rows = []
    for evaluation, m in run.metrics.items():
        rows.append({
            "model": "maniqa" if run.variant == "maniqa" else "ma_agiqa",
            "variant": run.variant, "dataset": data.dataset, "protocol": data.protocol,
            "seed": run.seed, "profile": data.profile, "selection": "best_on_val",
            "evaluation": evaluation, "srcc": m["srcc"], "plcc": m["plcc_logistic"],
            "krcc": m["krcc"], "rmse": m["rmse_logistic"], "n": m["n"],
            "plcc_raw": m["plcc"], "plcc_logistic": m["plcc_logistic"],
            "within_group_srcc": m.get("within_group_srcc"),
            "srcc_ci": list(m.get("srcc_ci", ())), "plcc_ci": list(m.get("plcc_ci", ())),
            "best_epoch": run.best_epoch, "train_seconds": round(run.seconds, 1),
            "mllm_stand_in": data.mllm_is_stand_in,
        })
    return rows


def seed_summary(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval across seeds of test SRCC / PLCC per variant and evaluation."""
    out = []
    for (variant, evaluation), g in table.groupby(["variant", "evaluation"], sort=False):
        row = {"variant": variant, "evaluation": evaluation, "seeds": len(g)}
        for metric in ("srcc", "plcc"):
            values = g[metric].to_numpy(dtype=float)
            mean = float(np.mean(values))
            half = (float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) *
                          np.std(values, ddof=1) / np.sqrt(len(values)))
                    if len(values) > 1 else float("nan"))
            row.update({metric: mean, f"{metric}_lo": mean - half, f"{metric}_hi": mean + half})
        out.append(row)
    return pd.DataFrame(out)


def run_study(dataset: str = "demo", root: str | os.PathLike | None = None,
              profile: str = "lite", protocol: str = "ma_agiqa",
              variants: Sequence[str] = ("maniqa", "released_gate", "softmax_gate"),
              seeds: Sequence[int] = (20,), epochs: int | None = None,
              out_dir: str | os.PathLike = "outputs", results_path: str | os.PathLike | None = None,
              fast: bool = False, flip: str = "as_released", device: str = "cpu",
              data: PreparedData | None = None, progress: bool = True) -> StudyResult:
    """Train every variant for every seed on one dataset/profile/protocol and tabulate.

    Runs are checkpointed under `{out_dir}/runs/...` (resumable); with `results_path`, each
    run's metrics are appended to the results file. `fast`: 2 epochs (smoke runs).
    """
    from agiqa_lib.evaluation.results import append_result, save_predictions

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise AgiqaError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if data is None:
        data = prepare_data(dataset, root, profile, protocol,
                            need_semantic=any(v != "maniqa" for v in variants),
                            device=device, progress=progress)
    runs, rows = [], []
    for seed in seeds:
        cfg = train_config(data.profile, epochs=2 if fast and epochs is None else epochs,
                           seed=seed, flip=flip, device=device)
        for variant in variants:
            model = new_model(data, variant, seed)
            run_dir = (Path(out_dir) / "runs" / f"{data.dataset}_{data.profile}_{data.protocol}"
                       / f"{variant}_seed{seed}_{cfg.flip}")
            run = train_run(model, data, cfg, run_dir, progress=progress)
            runs.append(run)
            for record in result_rows(run, data):
                if results_path is not None:
                    if record["evaluation"] == "all_test":
                        save_predictions(run.predictions, record, Path(results_path).parent)
                    append_result(record, results_path)
                rows.append(record)
    return StudyResult(data, runs, pd.DataFrame(rows))


def save_scorer_checkpoint(study: StudyResult, out_dir: str | os.PathLike = "outputs",
                           variant: str | None = None) -> Path:
    """Save one run's model as `{out_dir}/checkpoints/ma_agiqa_{dataset}_{profile}.safetensors`.

    Default: the released-gate run if trained, else the first run. Loadable by
    `models.ma_agiqa.load_scorer` (and `agiqa score`).
    """
    variants = [r.variant for r in study.runs]
    variant = variant or ("released_gate" if "released_gate" in variants else variants[0])
    run = study.run(variant)
    path = (Path(out_dir) / "checkpoints" /
            f"ma_agiqa_{study.data.dataset}_{study.data.profile}.safetensors")
    test = run.metrics["all_test"]
    return save_checkpoint(run.model.cpu(), path, {
        "dataset": study.data.dataset, "protocol": study.data.protocol, "seed": str(run.seed),
        "best_epoch": str(run.best_epoch), "test_srcc": f"{test['srcc']:.4f}",
        "mllm_stand_in": str(study.data.mllm_is_stand_in)})
