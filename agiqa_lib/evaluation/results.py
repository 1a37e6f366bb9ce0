"""The machine-readable results file: one typed `ResultRecord` per JSON line.

Notebooks 01, 02 and 04 (and the CLI) add records; notebook 05 reads them all. A record's
identity (`ResultRecord.identity`) says which run it describes; adding a record with the
identity of an earlier one replaces it, so re-running a notebook never duplicates rows, and
the report groups seeds by the same identity minus the seed. Identity fields added later
(`feature_scale`, `text_feature_scale`) read as "-" at their released value (1.0; unset), so
records written before they existed and new records of the released setting share an
identity.

Metric names are unambiguous: `plcc_raw` (Pearson on raw predictions) and `plcc_logistic`
(after MA-AGIQA's 4-parameter logistic), `rmse_logistic`, `within_generator_srcc`,
`within_prompt_srcc`. Files written before these names existed (with `plcc`, `rmse`,
`within_group_srcc`, whose meaning depended on the model) are read and converted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from agiqa_lib.core.io import atomic_path, exclusive_lock

IDENTITY_FIELDS = ("model", "variant", "dataset", "target", "protocol", "profile", "weights",
                   "seed", "selection", "evaluation", "feature_scale", "text_feature_scale")
# identity fields added after results files existed: their released value is no part of the
# identity (reads "-", as a record without the field does), so old files still match
IDENTITY_DEFAULTS: dict[str, Any] = {"feature_scale": 1.0}
# identity fields holding numbers: written as floats (2 and 2.0 are one run), NaN reads "-"
NUMERIC_IDENTITY_FIELDS = ("feature_scale", "text_feature_scale")
METRIC_FIELDS = ("srcc", "krcc", "plcc_raw", "plcc_logistic", "rmse_logistic",
                 "within_generator_srcc", "within_prompt_srcc")


@dataclass
class ResultRecord:
    """One evaluated run: who (identity), how well (metrics) and how it was made (settings)."""

    # identity
    model: str                          # clip_agiqa, image_only_control, maniqa, ma_agiqa, ...
    dataset: str
    protocol: str                       # split protocol
    profile: str                        # full, lite, tiny, or "none" for pixel-free baselines
    seed: int | None = None
    variant: str | None = None          # MA-AGIQA fusion variant
    target: str | None = None           # score column (None: the dataset's default)
    weights: str = "pretrained"         # "random": full-size architecture, random weights
    selection: str = "none"             # epoch selection rule (best_on_val, last, ...)
    evaluation: str = "all_test"        # which test images (all_test, as_released_drop_last)
    feature_scale: float | None = None  # CLIP-AGIQA's head-input scale (1.0 as released;
                                        # None: not a trained CLIP-AGIQA head)
    text_feature_scale: float | None = None  # its text features' own scale (None: the same)
    # metrics
    n: int = 0
    srcc: float = math.nan
    krcc: float = math.nan
    plcc_raw: float = math.nan
    plcc_logistic: float = math.nan
    rmse_logistic: float = math.nan
    fit: str | None = None              # "logistic", or "linear" when the logistic fit failed
    srcc_ci: tuple[float, float] | None = None
    plcc_ci: tuple[float, float] | None = None  # interval of the raw PLCC
    within_generator_srcc: float | None = None
    within_prompt_srcc: float | None = None
    # how the run was made
    epochs: int | None = None
    best_epoch: int | None = None
    train_seconds: float | None = None
    precision: str | None = None
    augmentation: str | None = None     # CLIP-AGIQA: cached views or fresh views per epoch
    mllm_model_id: str | None = None    # MA-AGIQA: which MLLM made the semantic vectors
    mllm_stand_in: bool | None = None
    predictions: str | None = None      # per-image predictions file (notebook 05 reads it)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], **fields: Any) -> ResultRecord:
        """A record from `evaluation.metrics.evaluate` output plus identity/settings fields.

        `evaluate`'s `within_group_srcc` is read as the within-generator SRCC (pass
        `within_prompt_srcc=` separately when prompts were the groups).
        """
        return cls(n=int(metrics["n"]), srcc=metrics["srcc"], krcc=metrics["krcc"],
                   plcc_raw=metrics["plcc"], plcc_logistic=metrics["plcc_logistic"],
                   rmse_logistic=metrics["rmse_logistic"], fit=metrics.get("fit"),
                   srcc_ci=_pair(metrics.get("srcc_ci")), plcc_ci=_pair(metrics.get("plcc_ci")),
                   **{"within_generator_srcc": metrics.get("within_group_srcc"), **fields})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ResultRecord:
        """Read a stored record, including those written with the older, ambiguous names."""
        data = dict(raw)
        if "plcc_raw" not in data and "plcc" in data:
            # old files: `plcc` was raw for CLIP-AGIQA and baseline rows and logistic (with
            # `plcc_raw` beside it) for MA-AGIQA rows
            data["plcc_raw"] = data["plcc"]
        data.pop("plcc", None)
        if "rmse" in data:  # always the RMSE after the logistic fit
            data.setdefault("rmse_logistic", data.pop("rmse"))
        if "within_group_srcc" in data:  # always grouped by generator
            data.setdefault("within_generator_srcc", data.pop("within_group_srcc"))
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {**data.pop("extra", {}), **{k: data.pop(k) for k in list(data) if k not in known}}
        for key in ("srcc_ci", "plcc_ci"):
            data[key] = _pair(data.get(key))
        return cls(**data, extra=extra)

    @property
    def identity(self) -> tuple[str, ...]:
        """What makes two records describe the same run (re-running replaces the record)."""
        return tuple(identity_value(k, getattr(self, k)) for k in IDENTITY_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN kept as NaN; tuples as lists)."""
        out = dataclasses.asdict(self)
        for key in ("srcc_ci", "plcc_ci"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


def identity_value(key: str, value: Any) -> str:
    """One identity field as text: "-" for None. A numeric field also reads "-" when NaN (a
    table cell without it) or at its released value in `IDENTITY_DEFAULTS` (so a record at
    feature_scale 1.0 matches one written before the field existed), else its number as a
    float (2 and 2.0 are one run)."""
    if value is None:
        return "-"
    if key in NUMERIC_IDENTITY_FIELDS:
        number = float(value)
        return "-" if math.isnan(number) or number == IDENTITY_DEFAULTS.get(key) else str(number)
    return str(value)


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    lo, hi = value
    return float(lo), float(hi)


def default_results_path() -> Path:
    """`$AGIQA_RESULTS` when set, else `outputs/results.jsonl` under the working directory."""
    return Path(os.environ.get("AGIQA_RESULTS", "outputs/results.jsonl"))


def add_records(records: Iterable[ResultRecord], path: str | os.PathLike | None = None) -> Path:
    """Add records to the results file (atomically); a record replaces one of the same identity.

    Read, merge and write happen under the file's lock (`{name}.lock` beside it), so studies
    that write one results file at the same time (two `agiqa train-*` runs, or a notebook
    beside a CLI run) keep each other's records.
    """
    path = Path(path) if path is not None else default_results_path()
    new = list(records)
    if not all(isinstance(r, ResultRecord) for r in new):
        raise TypeError("add_records takes ResultRecord objects")
    keys = {r.identity for r in new}
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(path.name + ".lock"),
                        f"waiting for another process writing {path}"):
        kept = [r for r in read_records(path) if r.identity not in keys]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r.to_dict(), default=str) + "\n"
                                   for r in kept + new))
    return path


def read_records(path: str | os.PathLike | None = None) -> list[ResultRecord]:
    """All records of a results file (old and new format), [] when the file does not exist."""
    path = Path(path) if path is not None else default_results_path()
    if not path.exists():
        return []
    return [ResultRecord.from_dict(json.loads(line))
            for line in path.read_text().splitlines() if line.strip()]


def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The results file as a DataFrame, one row per record, columns = ResultRecord fields."""
    records = read_records(path)
    columns = [f.name for f in dataclasses.fields(ResultRecord)]
    return pd.DataFrame([r.to_dict() for r in records], columns=columns)


def save_predictions(predictions: pd.DataFrame, record: ResultRecord,
                     out_dir: str | os.PathLike) -> Path:
    """Write one run's per-image predictions (name, mos, pred, ...) and point the record at them.

    The file is named after the record's identity; notebook 05 draws scatter plots and
    per-generator errors from it.
    """
    needed = {"name", "mos", "pred"}
    if not needed.issubset(predictions.columns):
        raise ValueError(f"predictions need columns {sorted(needed)}")
    stem = "_".join(v for v in record.identity if v not in ("-", ""))
    path = Path(out_dir) / "predictions" / f"{stem.replace('/', '-')}.csv"
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False)
    record.predictions = str(path)
    return path
