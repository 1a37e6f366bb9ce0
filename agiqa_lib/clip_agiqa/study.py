"""The CLIP-AGIQA study of notebook 02 and `agiqa train-clip`, in the steps both papers share.

1. `prepare(cfg)`: dataset, split, quality bins and cached frozen-CLIP image features (a
   fixed test view, + K augmented views of each train row when `cfg.augmentation ==
   "cached"`), on `cfg.device` in `cfg.precision`. Rows that no split part takes (no MOS) are
   dropped.
2. `train(data, cfg, use_text)`: CLIP-AGIQA (or the image-only control) under every
   selection rule, from fresh views every epoch (the release, `full`) or the cached views;
   `baselines(data)`: zero-shot CLIP-IQA, ridge and SVR probes; with a recipe other than the
   released one (`lite`), `train_with_released(data)`: CLIP-AGIQA under the study's recipe and
   under the released one on the same frozen CLIP, trained side by side, reported together.
3. `evaluate(data, predictions, runs, cfg)`: SRCC/PLCC/KRCC with bootstrap CIs per
   (model, selection rule); `records(...)`: one `ResultRecord` per row (predictions saved).
`run(cfg)` chains them (the CLI); the notebook calls the steps one by one.

In a launched run (`accelerate launch` / `torchrun -m agiqa_lib.cli train-clip`, see
`core.distributed`) every rank runs `run`: the feature extraction and the training are shared
out (`core.features`, `clip_agiqa.train`), every rank holds the same predictions and table,
and only rank 0 writes the results file, the predictions, the tables and the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from agiqa_lib.backbones.clip import ClipBundle, create_clip
from agiqa_lib.clip_agiqa.baselines import ridge_probe, svr_probe, zero_shot_clip_iqa
from agiqa_lib.clip_agiqa.binning import assign_classes, resolve_cutpoints
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.clip_agiqa.model import (ClipAgiqa, ClipAgiqaConfig, create_clip_agiqa,
                                        save_checkpoint)
from agiqa_lib.clip_agiqa.train import (SELECTION_RULES, ClipFeatures, FreshViews, SelectionPlan,
                                        SelectionRun, fit_plans, plan_selection_rules)
from agiqa_lib.core import distributed
from agiqa_lib.core.features import clip_image_features
from agiqa_lib.core.io import atomic_path
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.data.splits import assigned_rows, evenly_spread, make_split
from agiqa_lib.evaluation.metrics import bootstrap_ci, evaluate as evaluate_metrics
from agiqa_lib.evaluation.results import ResultRecord, add_records, save_predictions

MODEL_NAMES = {True: "clip_agiqa", False: "image_only_control"}
# The released recipe trained beside another one: the run on all train rows, as released.
RELEASED_RULES = ("best_on_test", "last")


@dataclass
class ClipStudyData:
    """Everything the CLIP-AGIQA experiments share: rows, split, bins, CLIP and its features."""

    cfg: ClipStudyConfig
    df: pd.DataFrame
    split: pd.Series
    bundle: ClipBundle
    features: ClipFeatures
    cutpoints: np.ndarray
    classes: np.ndarray  # quality-class index of every row (from the train-MOS bins)

    @property
    def mos(self) -> np.ndarray:
        return self.df["mos"].to_numpy(dtype=float)

    def rows(self, part: str) -> np.ndarray:
        """Positional indices of the rows in split part `part`."""
        return np.flatnonzero(self.split.to_numpy() == part)

    def groups(self, part: str, column: str = "prompt") -> np.ndarray | None:
        """`column` (prompt or generator) of each row of `part`, when the dataset has it."""
        if column not in self.df or self.df[column].isna().all() \
                or (self.df[column].astype(str) == "").all():
            return None
        return self.df[column].to_numpy()[self.rows(part)]


def training_rows(split: pd.Series) -> np.ndarray:
    """Rows every training run draws from (the "train" part; `best_on_val` carves its val part
    out of them), the only rows whose augmented views are extracted."""
    return np.flatnonzero(np.asarray(split) == "train")


def prepare(cfg: ClipStudyConfig, bundle: ClipBundle | None = None) -> ClipStudyData:
    """Load the dataset (`cfg.limit`: N rows evenly spread over it), split it, bin the train
    MOS and extract (or read cached) CLIP features."""
    df = evenly_spread(load_dataset(cfg.dataset, root=cfg.root, target=cfg.target), cfg.limit)
    df, split = assigned_rows(df, make_split(df, cfg.protocol, seed=cfg.split_seed))
    train_mos = df.loc[split == "train", "mos"].to_numpy(dtype=float)
    cutpoints = resolve_cutpoints(cfg.binning, train_mos, dataset=cfg.dataset)
    device = distributed.current(cfg.device).device_for(cfg.device)  # cfg's, or this rank's
    bundle = bundle or create_clip(cfg.profile, device=device, precision=cfg.precision,
                                   **cfg.clip_kwargs())
    n_aug = 0 if cfg.fresh_views else cfg.n_aug_views  # fresh views are drawn while training
    aug_rows = training_rows(split)  # no run trains on val or test rows: no views for them
    views = clip_image_features(df, bundle, cfg.dataset, n_aug=n_aug, seed=cfg.seed,
                                batch_size=cfg.batch_size, progress=cfg.progress,
                                aug_rows=aug_rows)
    features = ClipFeatures.from_views(views, aug_rows)
    return ClipStudyData(cfg, df, split, bundle, features, cutpoints,
                         assign_classes(df["mos"].to_numpy(dtype=float), cutpoints))


def train(data: ClipStudyData, cfg: ClipStudyConfig, use_text: bool = True,
          rules: tuple[str, ...] = SELECTION_RULES) -> tuple[SelectionRun, ClipAgiqa]:
    """Train CLIP-AGIQA (`use_text=True`) or the image-only control under each selection rule
    in `rules` (without `best_on_val`, a split without a val part needs one run, not two).

    Training state is checkpointed under `{out_dir}/checkpoints/training/` and resumed.
    With `cfg.augmentation == "fresh"` every step loads and augments its images and runs the
    frozen image encoder on `cfg.device` (no_grad); evaluation uses the cached test view.
    Returns the run and a model holding the `last` weights (the honest rule) for saving.
    """
    plan, make_model = _plan(data, cfg, use_text, rules)
    run = fit_plans([plan], cfg.parallel_runs, cfg.threads, cfg.progress)[0]
    return run, _with_last_weights(make_model(), run)


def train_with_released(data: ClipStudyData) -> tuple[SelectionRun, ClipAgiqa,
                                                      ReleasedRecipeRun | None]:
    """CLIP-AGIQA under the study's recipe (every selection rule, as `train`) and, when the
    study trains the released recipe beside it (`cfg.trains_released_beside`), under the
    released recipe on the same CLIP and split (`ClipStudyConfig.released_recipe`: head input
    scale 1, 100 epochs, 8 cached views, extracted here first; one run on all train rows, as
    released: `best_on_test` and `last`).

    The runs of both recipes share one pool of workers, the released run first: on two cores
    one worker trains it while the other trains the study's two shorter runs one after another.
    Each run equals the run trained alone with its worker's threads.
    """
    cfg = data.cfg
    if not cfg.trains_released_beside:
        return (*train(data, cfg), None)
    plan, make_model = _plan(data, cfg, True, SELECTION_RULES)
    released_cfg = cfg.released_recipe()
    released_data = prepare(released_cfg, bundle=data.bundle)
    released_plan, _ = _plan(released_data, released_cfg, True, RELEASED_RULES)
    released_run, run = fit_plans([released_plan, plan], cfg.parallel_runs, cfg.threads,
                                  cfg.progress)
    runs = {MODEL_NAMES[True]: released_run}
    predictions = collect_predictions({}, runs)
    released = ReleasedRecipeRun(released_data, released_run,
                                 evaluate(released_data, predictions, runs), predictions)
    return run, _with_last_weights(make_model(), run), released


def _plan(data: ClipStudyData, cfg: ClipStudyConfig, use_text: bool,
          rules: tuple[str, ...]) -> tuple[SelectionPlan, Callable[[], ClipAgiqa]]:
    """The training runs of one model under `cfg` (not yet trained) and its model builder."""
    model_config = cfg.model_config(use_text)
    train_config = cfg.train_config()
    bundle = data.bundle

    def make_model() -> ClipAgiqa:
        return create_clip_agiqa(cfg.profile, replace(model_config), bundle=bundle,
                                 device=bundle.device, **cfg.clip_kwargs())

    fresh = None
    if cfg.fresh_views:
        fresh = FreshViews(data.df["path"].astype(str).tolist(), bundle.preprocess_train,
                           lambda x: bundle.model.encode_image(x.to(bundle.dtype)),
                           device=bundle.device, num_workers=cfg.num_workers)
    digest = _run_digest(data, model_config, train_config)
    checkpoint_dir = (cfg.out / "checkpoints" / "training" /
                      f"{MODEL_NAMES[use_text]}_{cfg.dataset}_{cfg.profile}{cfg.weights_tag}"
                      f"_{cfg.protocol}{cfg.scale_tag}_seed{cfg.seed}_{digest}")
    plan = plan_selection_rules(make_model, data.features, data.mos, data.split, train_config,
                                rules=rules, val_fraction=cfg.val_fraction,
                                checkpoint_dir=checkpoint_dir, progress=cfg.progress,
                                fresh=fresh)
    return plan, make_model


def _with_last_weights(model: ClipAgiqa, run: SelectionRun) -> ClipAgiqa:
    """`model` holding the `last` weights of `run`, in eval mode."""
    model.load_trainable_state_dict(run.states["last"])
    return model.eval()


def _run_digest(data: ClipStudyData, config: ClipAgiqaConfig, train_config: Any) -> str:
    """Short hash of everything a training run depends on (its resumable state's folder).

    The model config includes `feature_scale` and `text_feature_scale`, so a state trained at
    other scales is never resumed; at the released 1.0 (and an unset text scale) they are left
    out (`ClipAgiqaConfig.stored_fields`), so released runs keep their old digest.
    """
    digest = hashlib.sha256()
    augmented = data.features.augmented
    fresh = ["fresh"] if data.cfg.fresh_views else []  # cached runs keep their old digest
    digest.update(json.dumps([config.stored_fields(), asdict(train_config),
                              data.cfg.val_fraction, data.bundle.model_id, list(data.features.test.shape),
                              None if augmented is None else list(augmented.shape)]
                             + fresh).encode())
    digest.update("|".join(map(str, data.split.tolist())).encode())
    digest.update(np.ascontiguousarray(data.mos).tobytes())
    digest.update(data.features.test[:8].float().numpy().tobytes())
    return digest.hexdigest()[:10]


def baselines(data: ClipStudyData) -> dict[str, np.ndarray]:
    """Test predictions of zero-shot CLIP-IQA and the ridge / SVR probes on the same features."""
    train_rows, test_rows = data.rows("train"), data.rows("test")
    feats = data.features.test
    train_x, test_x = feats[torch.as_tensor(train_rows)], feats[torch.as_tensor(test_rows)]
    return {
        "zero_shot_clip_iqa": zero_shot_clip_iqa(data.bundle.model, data.bundle.tokenizer, test_x),
        "ridge_probe": ridge_probe(train_x, data.mos[train_rows], test_x),
        "svr_probe": svr_probe(train_x, data.mos[train_rows], test_x, seed=data.cfg.seed),
    }


def collect_predictions(baseline_predictions: dict[str, np.ndarray],
                        runs: dict[str, SelectionRun]) -> dict[tuple[str, str], np.ndarray]:
    """{(model, selection): test predictions} from baselines and trained selection runs."""
    preds = {(name, "none"): p for name, p in baseline_predictions.items()}
    for model_name, run in runs.items():
        preds.update({(model_name, rule): p for rule, p in run.predictions.items()})
    return preds


def evaluate(data: ClipStudyData, predictions: dict[tuple[str, str], np.ndarray],
             runs: dict[str, SelectionRun] | None = None) -> pd.DataFrame:
    """One row per (model, selection): SRCC/PLCC/KRCC with 95% bootstrap CIs, RMSE, epoch."""
    test = data.rows("test")
    mos, prompts, generators = data.mos[test], data.groups("test"), data.groups("test", "generator")
    rows = []
    for (model, selection), pred in predictions.items():
        metrics = evaluate_metrics(pred, mos, groups=generators)
        row = {"model": model, "selection": selection}
        for name, key in (("srcc", "srcc"), ("plcc", "plcc_raw"), ("krcc", "krcc")):
            lo, hi = bootstrap_ci(pred, mos, name, n_boot=data.cfg.n_boot, seed=data.cfg.seed)
            row.update({key: metrics[name], f"{key}_lo": lo, f"{key}_hi": hi})
        within_prompt = (evaluate_metrics(pred, mos, groups=prompts)["within_group_srcc"]
                         if prompts is not None else float("nan"))
        row.update(plcc_logistic=metrics["plcc_logistic"], rmse_logistic=metrics["rmse_logistic"],
                   within_generator_srcc=metrics.get("within_group_srcc", float("nan")),
                   within_prompt_srcc=within_prompt, n=metrics["n"], fit=metrics["fit"])
        run = (runs or {}).get(model)
        row["epoch"] = run.best_epochs.get(selection) if run is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def records(table: pd.DataFrame, data: ClipStudyData,
            predictions: dict[tuple[str, str], np.ndarray] | None = None) -> list[ResultRecord]:
    """One ResultRecord per table row; with `predictions`, each row's per-image test
    predictions are saved under `{out_dir}/predictions/` (notebook 05 reads them)."""
    cfg, test = data.cfg, data.rows("test")
    test_frame = data.df.iloc[test][["name", "generator"]].reset_index(drop=True)
    test_frame["mos"] = data.mos[test]
    out = []
    for row in table.to_dict("records"):
        trained = row["model"] in MODEL_NAMES.values()
        record = ResultRecord(
            model=row["model"], dataset=cfg.dataset, protocol=cfg.protocol, profile=cfg.profile,
            seed=cfg.seed, target=cfg.target, selection=row["selection"], n=int(row["n"]),
            srcc=row["srcc"], krcc=row["krcc"], plcc_raw=row["plcc_raw"],
            plcc_logistic=row["plcc_logistic"], rmse_logistic=row["rmse_logistic"],
            fit=row["fit"], srcc_ci=(row["srcc_lo"], row["srcc_hi"]),
            plcc_ci=(row["plcc_raw_lo"], row["plcc_raw_hi"]),
            within_generator_srcc=row["within_generator_srcc"],
            within_prompt_srcc=row["within_prompt_srcc"],
            epochs=cfg.epochs if trained else None,
            best_epoch=None if pd.isna(row["epoch"]) else int(row["epoch"]),
            weights=cfg.weights, precision=cfg.precision,
            augmentation=cfg.augmentation_label if trained else None,
            feature_scale=cfg.feature_scale if trained else None,
            text_feature_scale=cfg.text_feature_scale if trained else None,
            extra={"clip_model_id": data.bundle.model_id,
                   **({"recipe": cfg.recipe} if trained else {})})
        pred = (predictions or {}).get((row["model"], row["selection"]))
        if pred is not None:
            save_predictions(test_frame.assign(pred=pred), record, cfg.out)
        out.append(record)
    return out


@dataclass
class ReleasedRecipeRun:
    """CLIP-AGIQA trained with the released recipe on the frozen CLIP of a study that uses
    another one: its own views and config (`data.cfg`), one run, its table and predictions."""

    data: ClipStudyData
    run: SelectionRun
    table: pd.DataFrame
    predictions: dict[tuple[str, str], np.ndarray]


@dataclass
class ClipStudy:
    """What `run` produced (`released`: the released recipe beside another one, or None)."""

    data: ClipStudyData
    runs: dict[str, SelectionRun]
    table: pd.DataFrame
    checkpoint: Path
    seconds: dict[str, float] = field(default_factory=dict)
    released: ReleasedRecipeRun | None = None


def run(cfg: ClipStudyConfig) -> ClipStudy:
    """The whole notebook-02 experiment: features, CLIP-AGIQA + control under every rule,
    baselines, the table (recorded in the results file) and a checkpoint of CLIP-AGIQA."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = prepare(cfg)
    seconds["features"] = time.perf_counter() - start
    runs, models = {}, {}
    start = time.perf_counter()
    runs["clip_agiqa"], models["clip_agiqa"], released = train_with_released(data)
    seconds["clip_agiqa" if released is None else "clip_agiqa_both_recipes"] = \
        time.perf_counter() - start
    start = time.perf_counter()
    runs["image_only_control"], models["image_only_control"] = train(data, cfg, use_text=False)
    seconds["image_only_control"] = time.perf_counter() - start
    start = time.perf_counter()
    predictions = collect_predictions(baselines(data), runs)
    table = evaluate(data, predictions, runs)
    seconds["baselines_and_table"] = time.perf_counter() - start
    checkpoint = checkpoint_path(cfg)
    with distributed.main_process_first() as main:  # a launched run: rank 0 writes
        if main:
            if cfg.results_path is not None:
                add_records(records(table, data, predictions), cfg.results_path)
                if released is not None:
                    add_records(records(released.table, released.data, released.predictions),
                                cfg.results_path)
            save_study_tables(table, runs, study_tables_folder(cfg))
            if released is not None:
                save_study_tables(released.table, {MODEL_NAMES[True]: released.run},
                                  study_tables_folder(released.data.cfg))
            checkpoint = save_checkpoint(
                models["clip_agiqa"], checkpoint,
                extra_metadata={"dataset": cfg.dataset, "protocol": cfg.protocol,
                                "epochs": cfg.epochs, "selection": "last", "seed": cfg.seed,
                                "augmentation": cfg.augmentation_label})
    return ClipStudy(data, runs, table, checkpoint, seconds, released)


def study_tables_folder(cfg: ClipStudyConfig) -> Path:
    """Where `run` writes a study's table and training histories as CSV files."""
    return cfg.out / (f"clip_study_{cfg.dataset}_{cfg.profile}{cfg.weights_tag}_{cfg.protocol}"
                      f"{cfg.scale_tag}")


def save_study_tables(table: pd.DataFrame, runs: dict[str, SelectionRun], folder: Path) -> None:
    """Write the results table and every run's per-epoch history as CSV files (atomically)."""
    frames = {"table": table, **{f"history_{model}_{name}": hist for model, run in runs.items()
                                 for name, hist in run.histories.items()}}
    for name, frame in frames.items():
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)


def checkpoint_path(cfg: ClipStudyConfig) -> Path:
    """Where the study saves its CLIP-AGIQA checkpoint (random-weight runs: `..._random`;
    a split other than `clip_agiqa`: `..._{protocol}`; a feature scale other than the released
    1.0: `..._scale{s}`)."""
    return (cfg.out / "checkpoints" / f"clip_agiqa_{cfg.dataset}_{cfg.profile}{cfg.weights_tag}"
                                      f"{cfg.protocol_tag}{cfg.scale_tag}.safetensors")
