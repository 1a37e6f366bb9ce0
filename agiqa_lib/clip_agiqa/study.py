"""The CLIP-AGIQA study of notebook 02 and `agiqa train-clip`, step by step.

1. `prepare_study_data`: dataset, split, quality bins and cached frozen-CLIP image features
   (fixed test view + K augmented views per image).
2. `train_selection_rules`: CLIP-AGIQA (or the image-only control) under each selection rule.
3. `run_baselines`: zero-shot CLIP-IQA, ridge and SVR probes on the same features.
4. `results_table` + `record_results`: SRCC/PLCC/KRCC with bootstrap CIs, one results-file
   record per (model, selection rule).
`run_clip_study` chains them (the CLI); the notebook calls the steps one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from agiqa_lib.clip_agiqa.binning import assign_classes, resolve_cutpoints
from agiqa_lib.clip_agiqa.baselines import ridge_probe, svr_probe, zero_shot_clip_iqa
from agiqa_lib.clip_agiqa.train import (SELECTION_RULES, ClipFeatures, SelectionRun, TrainConfig,
                                     fit_selection_rules)
from agiqa_lib.evaluation.metrics import bootstrap_ci, evaluate
from agiqa_lib.clip_agiqa.model import ClipAgiqa, ClipAgiqaConfig, create_clip_agiqa

MODEL_NAMES = {True: "clip_agiqa", False: "image_only_control"}


@dataclass
class ClipStudyData:
    """Everything the CLIP-AGIQA experiments share: rows, split, bins, CLIP and its features."""

    dataset: str
    profile: str
    protocol: str
    seed: int
    df: pd.DataFrame
    split: pd.Series
    bundle: Any
    features: ClipFeatures
    cutpoints: np.ndarray
    classes: np.ndarray  # quality-class index of every row (from the train-MOS bins)

    @property
    def mos(self) -> np.ndarray:
        return self.df["mos"].to_numpy(dtype=float)

    def rows(self, part: str) -> np.ndarray:
        """Positional indices of the rows in split part `part`."""
        return np.flatnonzero(self.split.to_numpy() == part)

    def groups(self, part: str) -> np.ndarray | None:
        """Prompt of each row of `part` (for within-prompt SRCC), when the dataset has prompts."""
        if "prompt" not in self.df or self.df["prompt"].isna().all():
            return None
        return self.df["prompt"].to_numpy()[self.rows(part)]


def prepare_study_data(dataset: str = "demo", root: str | os.PathLike | None = None,
                       profile: str = "lite", protocol: str = "clip_agiqa", n_aug_views: int = 8,
                       seed: int = 0, binning: str | Sequence[float] = "quantiles",
                       target: str | None = None, split_seed: int | None = None,
                       batch_size: int = 32, progress: bool = True, bundle: Any = None,
                       **clip_kwargs: Any) -> ClipStudyData:
    """Load the dataset, split it, bin the train MOS and extract/cached the CLIP features."""
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.core.features import clip_image_features
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.data.splits import make_split

    df = load_dataset(dataset, root=root, target=target).reset_index(drop=True)
    split = make_split(df, protocol, seed=split_seed)
    train_mos = df.loc[split == "train", "mos"].to_numpy(dtype=float)
    cutpoints = resolve_cutpoints(binning, train_mos, dataset=dataset)
    bundle = bundle or create_clip(profile, **clip_kwargs)
    views = clip_image_features(df, bundle, dataset, n_aug=n_aug_views, seed=seed,
                                batch_size=batch_size, progress=progress)
    return ClipStudyData(dataset, profile, protocol, seed, df, split, bundle,
                         ClipFeatures.from_views(views), cutpoints,
                         assign_classes(df["mos"].to_numpy(dtype=float), cutpoints))


def train_selection_rules(data: ClipStudyData, use_text: bool = True,
                          train_config: TrainConfig | None = None,
                          model_config: ClipAgiqaConfig | None = None,
                          rules: Sequence[str] = SELECTION_RULES, val_fraction: float = 0.1,
                          checkpoint_dir: str | os.PathLike | None = None,
                          progress: bool = True) -> tuple[SelectionRun, ClipAgiqa]:
    """Train CLIP-AGIQA (`use_text=True`) or the image-only control under each selection rule.

    Returns the run and a model holding the `last` weights (the honest rule) for saving.
    """
    train_config = train_config or TrainConfig(seed=data.seed)
    config = replace(model_config or ClipAgiqaConfig(), use_text=use_text)

    def make_model() -> ClipAgiqa:
        return create_clip_agiqa(data.profile, replace(config), bundle=data.bundle)

    if checkpoint_dir is not None:  # one folder per (model, data, split, features) combination
        checkpoint_dir = Path(checkpoint_dir) / f"{MODEL_NAMES[use_text]}_{data.dataset}_" \
            f"{data.profile}_{data.protocol}_seed{data.seed}_{_run_digest(data, config, train_config, val_fraction)}"
    run = fit_selection_rules(make_model, data.features, data.mos, data.split, train_config,
                              rules, val_fraction, checkpoint_dir, progress)
    model = make_model()
    model.load_trainable_state_dict(run.states["last" if "last" in run.states else next(iter(run.states))])
    return run, model.eval()


def _run_digest(data: ClipStudyData, config: ClipAgiqaConfig, train_config: TrainConfig,
                val_fraction: float) -> str:
    """Short hash of everything a training run depends on (its resumable state's folder)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([asdict(config), asdict(train_config), val_fraction, data.bundle.model_id,
                              list(data.features.test.shape),
                              None if data.features.augmented is None
                              else list(data.features.augmented.shape)]).encode())
    digest.update("|".join(map(str, data.split.tolist())).encode())
    digest.update(np.ascontiguousarray(data.mos).tobytes())
    digest.update(data.features.test[:8].numpy().tobytes())
    return digest.hexdigest()[:10]


def run_baselines(data: ClipStudyData) -> dict[str, np.ndarray]:
    """Test predictions of zero-shot CLIP-IQA and the ridge / SVR probes."""
    train, test = data.rows("train"), data.rows("test")
    feats = data.features.test
    train_x, test_x = feats[torch.as_tensor(train)], feats[torch.as_tensor(test)]
    return {
        "zero_shot_clip_iqa": zero_shot_clip_iqa(data.bundle.model, data.bundle.tokenizer, test_x),
        "ridge_probe": ridge_probe(train_x, data.mos[train], test_x),
        "svr_probe": svr_probe(train_x, data.mos[train], test_x, seed=data.seed),
    }


def collect_predictions(baselines: dict[str, np.ndarray],
                        runs: dict[str, SelectionRun]) -> dict[tuple[str, str], np.ndarray]:
    """{(model, selection): test predictions} from baselines and trained selection runs."""
    preds = {(name, "none"): p for name, p in baselines.items()}
    for model_name, run in runs.items():
        preds.update({(model_name, rule): p for rule, p in run.predictions.items()})
    return preds


def results_table(data: ClipStudyData, predictions: dict[tuple[str, str], np.ndarray],
                  runs: dict[str, SelectionRun] | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """One row per (model, selection): SRCC/PLCC/KRCC with 95% bootstrap CIs, RMSE, n, epoch."""
    test = data.rows("test")
    mos, groups = data.mos[test], data.groups("test")
    rows = []
    for (model, selection), pred in predictions.items():
        metrics = evaluate(pred, mos, groups=groups)
        row = {"model": model, "selection": selection}
        for name in ("srcc", "plcc", "krcc"):
            lo, hi = bootstrap_ci(pred, mos, name, n_boot=n_boot, seed=data.seed)
            row.update({name: metrics[name], f"{name}_lo": lo, f"{name}_hi": hi})
        row.update(plcc_logistic=metrics["plcc_logistic"], rmse=metrics["rmse_logistic"],
                   within_prompt_srcc=metrics.get("within_group_srcc", float("nan")),
                   n=metrics["n"])
        run = (runs or {}).get(model)
        row["epoch"] = run.best_epochs.get(selection) if run is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def paired_srcc_difference(pred_a: np.ndarray, pred_b: np.ndarray, mos: np.ndarray,
                           n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """SRCC(a) - SRCC(b) on the same test images, with a paired bootstrap 95% interval.

    Resampling the images once for both models cancels the test-set luck they share, so the
    interval is much narrower than comparing the two separate CIs.
    """
    from scipy import stats

    a, b, y = (np.asarray(v, dtype=float) for v in (pred_a, pred_b, mos))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(stats.spearmanr(a[idx], y[idx])[0] - stats.spearmanr(b[idx], y[idx])[0])
    diff = stats.spearmanr(a, y)[0] - stats.spearmanr(b, y)[0]
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {"srcc_difference": float(diff), "lo": float(lo), "hi": float(hi)}


def record_results(table: pd.DataFrame, data: ClipStudyData, results_path: str | os.PathLike | None,
                   extra: dict[str, Any] | None = None,
                   predictions: dict[tuple[str, str], np.ndarray] | None = None,
                   out_dir: str | os.PathLike | None = None) -> None:
    """Append one results-file record per table row (model names as in the table).

    With `predictions` and `out_dir`, each row's per-image test predictions are saved beside
    the results (notebook 05 draws scatters and per-generator errors from them), and the
    record gains the mean within-generator SRCC.
    """
    from agiqa_lib.evaluation.results import append_result, save_predictions

    test = data.rows("test")
    test_frame = data.df.iloc[test][["name", "generator"]].reset_index(drop=True)
    test_frame["mos"] = data.mos[test]
    for row in table.to_dict("records"):
        record = {"model": row["model"], "dataset": data.dataset, "protocol": data.protocol,
                  "seed": data.seed, "profile": data.profile, "selection": row["selection"],
                  "srcc": row["srcc"], "plcc": row["plcc"], "krcc": row["krcc"],
                  "rmse": row["rmse"], "n": int(row["n"]), "plcc_logistic": row["plcc_logistic"],
                  "srcc_ci": [row["srcc_lo"], row["srcc_hi"]],
                  "plcc_ci": [row["plcc_lo"], row["plcc_hi"]],
                  "within_prompt_srcc": row["within_prompt_srcc"], **(extra or {})}
        pred = (predictions or {}).get((row["model"], row["selection"]))
        if pred is not None and out_dir is not None:
            frame = test_frame.assign(pred=pred)
            record["within_group_srcc"] = evaluate(pred, frame["mos"].to_numpy(),
                                                   groups=frame["generator"].to_numpy()).get(
                                                       "within_group_srcc", float("nan"))
            save_predictions(frame, record, out_dir)
        append_result(record, results_path)


@dataclass
class ClipStudy:
    """What `run_clip_study` produced."""

    data: ClipStudyData
    runs: dict[str, SelectionRun]
    table: pd.DataFrame
    checkpoint: Path
    seconds: dict[str, float] = field(default_factory=dict)


def run_clip_study(dataset: str = "demo", root: str | os.PathLike | None = None,
                   profile: str = "lite", protocol: str = "clip_agiqa", epochs: int = 100,
                   n_aug_views: int = 8, seed: int = 0, out_dir: str | os.PathLike = "outputs",
                   results_path: str | os.PathLike | None = None, n_boot: int = 1000,
                   val_fraction: float = 0.1, frozen_precision: str = "fp32",
                   progress: bool = True) -> ClipStudy:
    """The whole notebook-02 experiment: features, CLIP-AGIQA + control under every rule,
    baselines, the table (recorded to the results file) and a checkpoint of CLIP-AGIQA."""
    from agiqa_lib.clip_agiqa.model import save_checkpoint

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = prepare_study_data(dataset, root, profile, protocol, n_aug_views, seed, progress=progress)
    seconds["features"] = time.perf_counter() - start
    config = TrainConfig(epochs=epochs, seed=seed)
    model_config = ClipAgiqaConfig(frozen_precision=frozen_precision)
    runs, models = {}, {}
    for use_text in (True, False):
        start = time.perf_counter()
        name = MODEL_NAMES[use_text]
        runs[name], models[name] = train_selection_rules(
            data, use_text, config, model_config, val_fraction=val_fraction,
            checkpoint_dir=Path(out_dir) / "checkpoints" / "training", progress=progress)
        seconds[name] = time.perf_counter() - start
    start = time.perf_counter()
    baselines = run_baselines(data)
    predictions = collect_predictions(baselines, runs)
    table = results_table(data, predictions, runs, n_boot=n_boot)
    seconds["baselines_and_table"] = time.perf_counter() - start
    if results_path is not None:
        record_results(table, data, results_path, extra={"epochs": epochs, "n_aug_views": n_aug_views},
                       predictions=predictions, out_dir=out_dir)
    save_study_tables(table, runs, Path(out_dir) / f"clip_study_{dataset}_{profile}_{protocol}")
    checkpoint = save_checkpoint(models["clip_agiqa"], checkpoint_path(out_dir, dataset, profile),
                                 extra_metadata={"dataset": dataset, "protocol": protocol, "epochs": epochs,
                                                 "selection": "last", "seed": seed})
    return ClipStudy(data, runs, table, checkpoint, seconds)


def save_study_tables(table: pd.DataFrame, runs: dict[str, SelectionRun], folder: Path) -> None:
    """Write the results table and every run's per-epoch history as CSV files (atomically)."""
    from agiqa_lib.core.io import atomic_path

    frames = {"table": table, **{f"history_{model}_{name}": hist for model, run in runs.items()
                                 for name, hist in run.histories.items()}}
    for name, frame in frames.items():
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)


def checkpoint_path(out_dir: str | os.PathLike, dataset: str, profile: str) -> Path:
    """Where notebook 02 saves its CLIP-AGIQA checkpoint."""
    return Path(out_dir) / "checkpoints" / f"clip_agiqa_{dataset}_{profile}.safetensors"

