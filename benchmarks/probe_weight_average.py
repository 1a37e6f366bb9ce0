"""Does averaging the weights help `lite` MANIQA? A probe on the `ma_agiqa` val part.

`lite` MANIQA's val SRCC swings by a few hundredths from epoch to epoch (batch 8, as
released), so the epoch that val picks is partly luck. This probe trains MANIQA alone once
(the `lite` model and recipe, seed 20, as `agiqa train-ma` does) and, beside the trained
weights, keeps
- exponential moving averages of the weights after every optimiser step (decays 0.99 and
  0.998: about 100 and 500 steps of memory; an epoch is 260 steps), and
- the uniform average of the weights at the end of the last 3 and last 5 epochs (SWA-style;
  there is no batch norm to recompute in the model),
then prints the val SRCC / PLCC of each per epoch. Only val is printed: settings are chosen on
val, never on test. The averages do not change the training itself, so the `raw` column is
the run `agiqa train-ma` makes.

    python benchmarks/probe_weight_average.py --threads 2
"""

from __future__ import annotations

import argparse
import copy

import pandas as pd
import torch
from scipy import stats
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from agiqa_lib.core.paths import shared_agiqa3k_root
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig, TrainConfig
from agiqa_lib.ma_agiqa.data import PreparedData
from agiqa_lib.ma_agiqa.model import MAAGIQA
from agiqa_lib.ma_agiqa.train import new_model, predict_rows, train_run

DECAYS = (0.99, 0.998)
LAST_EPOCHS = (3, 5)


def probe_parser(description: str) -> argparse.ArgumentParser:
    """The options every `lite` MANIQA probe takes: --root, --seed, --threads, --fast."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=shared_agiqa3k_root(),
                        help="AGIQA-3K folder (default: ../shared/data/AGIQA-3K when present)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fast", action="store_true",
                        help="96 images, 2 epochs: a check of the probe itself")
    return parser


def lite_maniqa(args: argparse.Namespace) -> tuple[PreparedData, TrainConfig, MAAGIQA]:
    """What a probe starts from: the `ma_agiqa` data of AGIQA-3K under `lite`, the released
    train config of `args.seed` on the CPU, and a fresh MANIQA-alone model of that seed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = MAStudyConfig(dataset="agiqa3k", root=args.root, profile="lite",
                        variants=("maniqa",), progress=False, fast=args.fast)
    data = study.prepare(cfg)
    return data, cfg.train_config(args.seed, device="cpu"), new_model(data, "maniqa", args.seed)


def main() -> None:
    args = probe_parser(__doc__.splitlines()[0]).parse_args()
    data, train_cfg, model = lite_maniqa(args)
    steps_per_epoch = len(data.rows("train")) // train_cfg.batch_size
    emas = {d: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True)
            for d in DECAYS}
    snapshots: dict[str, list[dict[str, torch.Tensor]]] = {"raw": []}
    snapshots.update({f"ema {d}": [] for d in DECAYS})
    steps = 0

    def after_step(optimizer: torch.optim.Optimizer, *_) -> None:
        nonlocal steps
        steps += 1
        for ema in emas.values():
            ema.update_parameters(model)
        if steps % steps_per_epoch == 0:  # an epoch ends: keep every set of weights
            snapshots["raw"].append(copy.deepcopy(model.state_dict()))
            for d, ema in emas.items():
                snapshots[f"ema {d}"].append(copy.deepcopy(ema.module.state_dict()))

    handle = register_optimizer_step_post_hook(after_step)
    run = train_run(model, data, train_cfg, progress=False)
    handle.remove()

    for k in LAST_EPOCHS:  # uniform average of the epoch-end weights of epochs e-k+1 .. e
        snapshots[f"last {k} epochs"] = [
            {name: torch.stack([s[name].float() for s in snapshots["raw"][e - k + 1:e + 1]])
             .mean(0).to(snapshots["raw"][e][name].dtype) for name in snapshots["raw"][e]}
            if e + 1 >= k else None for e in range(len(snapshots["raw"]))]
    val = data.rows("val")
    mos = data.df["mos"].to_numpy(dtype=float)[val]
    rows = []
    for kind, states in snapshots.items():
        for epoch, state in enumerate(states, start=1):
            if state is None:
                continue
            model.load_state_dict(state)
            pred, _ = predict_rows(model, data, val, train_cfg)
            rows.append({"weights": kind, "epoch": epoch,
                         "val_srcc": stats.spearmanr(pred, mos)[0],
                         "val_plcc": stats.pearsonr(pred, mos)[0]})
    pd.set_option("display.width", 200)
    table = pd.DataFrame(rows).pivot(index="epoch", columns="weights", values="val_srcc")
    table["train_run's val"] = run.history.set_index("epoch")["val_srcc"]  # same as raw
    print(f"seed {args.seed}, {steps} steps ({steps_per_epoch} per epoch); train_run's own "
          f"val choice: epoch {run.best_epoch}\nval SRCC per epoch:\n{table.round(4)}")
    best = pd.DataFrame(rows).sort_values("val_srcc").groupby("weights").tail(1)
    print(f"best epoch on val of each:\n{best.round(4).to_string(index=False)}")


if __name__ == "__main__":
    main()
