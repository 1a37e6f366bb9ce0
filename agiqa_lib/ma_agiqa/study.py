"""The MA-AGIQA study of notebook 04 and `agiqa train-ma`, in the steps both papers share.

1. `prepare(cfg)`: dataset, split, cached backbone tokens (lite/tiny) and semantic vectors
   (from the MLLM or the official released vectors, `cfg.semantic_source`).
2. `train(data, cfg, variant, seed)`: one resumable run of one variant, tested once on its
   best-val epoch (every test image, and the released drop_last subset); the best epoch is
   chosen as corrected (default) or as released (`cfg.val_selection`).
3. `evaluate(runs)`: one table row per variant x seed x evaluation; `records(run, data, cfg)`
   one `ResultRecord` per evaluation (predictions saved); `seed_summary` over seeds.
`run(cfg)` chains them (the CLI); the notebook calls the steps one by one. On a CPU, `run`
trains the independent runs side by side in worker processes (`cfg.parallel_runs`, see
`core.side_by_side`): each run's result equals that run alone with the worker's threads.

In a launched run (`accelerate launch` / `torchrun -m agiqa_lib.cli train-ma`, see
`core.distributed`) every rank runs `run`: the token and semantic caches are filled together,
each training run is data-parallel (`ma_agiqa.train`) on this rank's device, every rank holds
the same metrics, and only rank 0 writes the results file, the predictions and the scorer
checkpoint (`save_scorer_checkpoint` is collective).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from agiqa_lib.core import distributed, side_by_side
from agiqa_lib.core.tensor_io import tensors_from_bytes, tensors_to_bytes

from agiqa_lib.evaluation.results import ResultRecord, add_records, save_predictions
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.data import PreparedData, prepare_data
from agiqa_lib.ma_agiqa.model import MAAGIQA, save_checkpoint
from agiqa_lib.ma_agiqa.train import RunResult, new_model, train_run


def prepare(cfg: MAStudyConfig) -> PreparedData:
    """Dataset, split, cached backbone tokens and (when a variant fuses them) MLLM vectors."""
    return prepare_data(cfg)


def run_dir(cfg: MAStudyConfig, variant: str, seed: int, image_size: int = 224) -> Path:
    """Folder of one run's resumable state (settings away from the defaults name it)."""
    tags = "".join(tag for tag, on in (("_clean", cfg.clean_tablock),
                                       ("_asreleasedval", cfg.val_selection == "as_released"),
                                       (f"_{cfg.resize}", cfg.resize != "pil"),
                                       (f"_{image_size}px", image_size != 224),
                                       ("_official", cfg.official_vectors_dir is not None))
                   if on)
    return (cfg.out / "runs" / f"{cfg.dataset}_{cfg.profile}{cfg.weights_tag}_{cfg.protocol}"
            / f"{variant}_seed{seed}_{cfg.flip}{tags}")


def train(data: PreparedData, cfg: MAStudyConfig, variant: str, seed: int) -> RunResult:
    """Train one variant with one seed (resuming a killed run) and test its best-val epoch."""
    model = new_model(data, variant, seed, clean_tablock=cfg.clean_tablock)
    return train_run(model, data, cfg.train_config(seed),
                     run_dir(cfg, variant, seed, data.image_size),
                     progress=cfg.progress)


def records(run: RunResult, data: PreparedData, cfg: MAStudyConfig) -> list[ResultRecord]:
    """One ResultRecord per evaluation of a run; the all-test predictions are saved beside
    the results (notebook 05 reads them)."""
    out = []
    fused = run.variant != "maniqa"
    extra = {"flip": cfg.flip, "clean_tablock": cfg.clean_tablock, "resize": cfg.resize,
             "image_size": data.image_size,
             "val_selection": cfg.val_selection,
             "batch_size": cfg.train_config(run.seed, device="cpu").batch_size}
    if fused:
        extra["semantic_source"] = cfg.semantic_source
    if cfg.max_steps_per_epoch is not None:
        extra["max_steps_per_epoch"] = cfg.max_steps_per_epoch
    if run.notes:
        extra["notes"] = list(run.notes)
    for evaluation, metrics in run.metrics.items():
        record = ResultRecord.from_metrics(
            metrics, model="ma_agiqa" if fused else "maniqa",
            variant=run.variant, dataset=cfg.dataset, protocol=cfg.protocol,
            profile=cfg.profile, weights=cfg.weights, seed=run.seed, target=cfg.target,
            selection=run.selection, evaluation=evaluation, epochs=len(run.history),
            best_epoch=run.best_epoch, train_seconds=round(run.seconds, 1),
            precision=cfg.precision,
            mllm_model_id=data.mllm_model_id if fused else None,
            mllm_stand_in=data.mllm_is_stand_in if fused else None, extra=dict(extra))
        if evaluation == "all_test":
            save_predictions(run.predictions, record, cfg.out)
        out.append(record)
    return out


def evaluate(runs: list[RunResult]) -> pd.DataFrame:
    """One row per variant x seed x evaluation: SRCC, KRCC, PLCC (raw and logistic), RMSE,
    within-generator SRCC, bootstrap CIs, chosen epoch and training time."""
    rows = []
    for r in runs:
        for evaluation, m in r.metrics.items():
            rows.append({"variant": r.variant, "seed": r.seed, "evaluation": evaluation,
                         "srcc": m["srcc"], "krcc": m["krcc"], "plcc_raw": m["plcc"],
                         "plcc_logistic": m["plcc_logistic"],
                         "rmse_logistic": m["rmse_logistic"],
                         "within_generator_srcc": m.get("within_group_srcc"),
                         "srcc_ci": m.get("srcc_ci"), "plcc_ci": m.get("plcc_ci"), "n": m["n"],
                         "best_epoch": r.best_epoch, "train_seconds": round(r.seconds, 1)})
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval across seeds of test SRCC / PLCC per variant and evaluation."""
    out = []
    for (variant, evaluation), g in table.groupby(["variant", "evaluation"], sort=False):
        row = {"variant": variant, "evaluation": evaluation, "seeds": len(g)}
        for metric in ("srcc", "plcc_logistic", "within_generator_srcc"):
            values = g[metric].to_numpy(dtype=float)
            mean = float(np.mean(values))
            half = (float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) *
                          np.std(values, ddof=1) / np.sqrt(len(values)))
                    if len(values) > 1 else float("nan"))
            row.update({metric: mean, f"{metric}_lo": mean - half, f"{metric}_hi": mean + half})
        out.append(row)
    return pd.DataFrame(out)


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


def run(cfg: MAStudyConfig, data: PreparedData | None = None) -> StudyResult:
    """Train every variant for every seed (side by side on a CPU, `cfg.parallel_runs`), add
    the records to the results file in the order of seeds x variants, tabulate."""
    data = data if data is not None else prepare(cfg)
    jobs = [(variant, seed) for seed in cfg.seeds for variant in cfg.variants]
    processes = side_by_side.worker_count(cfg.parallel_runs, len(jobs), cfg.torch_device,
                                          cfg.threads)
    if processes > 1:
        detached = side_by_side.run_side_by_side(
            _train_detached, jobs, processes, shared=(data, cfg), cores=cfg.threads,
            desc="MA-AGIQA runs", progress=cfg.progress)
        runs = [_attach(result, weights, data, cfg) for result, weights in detached]
    else:
        runs = [train(data, cfg, variant, seed) for variant, seed in jobs]
    for result in runs:
        if cfg.results_path is not None:
            with distributed.main_process_first() as main:  # launched: rank 0 writes
                if main:
                    add_records(records(result, data, cfg), cfg.results_path)
    return StudyResult(data, runs, evaluate(runs))


def _train_detached(data: PreparedData, cfg: MAStudyConfig, variant: str, seed: int
                    ) -> tuple[RunResult, bytes]:
    """`train` in a worker process: the result without its model, and the model's weights
    (safetensors bytes: no shared-memory handle per tensor travels back)."""
    result = train(data, cfg, variant, seed)
    return dataclasses.replace(result, model=None), tensors_to_bytes(result.model.state_dict())


def _attach(result: RunResult, weights: bytes, data: PreparedData,
            cfg: MAStudyConfig) -> RunResult:
    """A worker's result with its trained model rebuilt here."""
    model: MAAGIQA = new_model(data, result.variant, result.seed,
                               clean_tablock=cfg.clean_tablock)
    model.load_state_dict(tensors_from_bytes(weights))
    return dataclasses.replace(result, model=model.eval())


def save_scorer_checkpoint(study: StudyResult, cfg: MAStudyConfig,
                           variant: str | None = None) -> Path:
    """Save one run's model as `{out_dir}/checkpoints/ma_agiqa_{dataset}_{profile}.safetensors`
    (`..._random` for random weights, `..._{protocol}` for a split other than `ma_agiqa`).

    Default: the released-gate run if trained, else the first run. Loadable by
    `ma_agiqa.model.load_scorer` (and `agiqa score`). In a launched run (collective) rank 0
    writes it while the others wait; every rank returns the path.
    """
    variants = [r.variant for r in study.runs]
    variant = variant or ("released_gate" if "released_gate" in variants else variants[0])
    chosen = study.run(variant)
    path = (cfg.out / "checkpoints" /
            f"ma_agiqa_{cfg.dataset}_{cfg.profile}{cfg.weights_tag}{cfg.protocol_tag}.safetensors")
    test = chosen.metrics["all_test"]
    with distributed.main_process_first() as main:
        if main:
            path = save_checkpoint(chosen.model.cpu(), path, {
                "dataset": cfg.dataset, "protocol": cfg.protocol, "seed": str(chosen.seed),
                "best_epoch": str(chosen.best_epoch), "test_srcc": f"{test['srcc']:.4f}",
                "selection": chosen.selection,
                "mllm_stand_in": str(study.data.mllm_is_stand_in)})
    return path
