"""Which training setting should `lite` CLIP-AGIQA use? A val-only comparison.

Each setting (feature scale S of the head input, the text features' own scale U, K cached
augmented views or the fixed view alone when K = 0, optionally the head's dropout D, 0.5 as
released when left out) trains CLIP-AGIQA and the image-only
control with the released SGD recipe on the `clip_agiqa` train part minus the carved
validation part (`clip_agiqa.train.carve_validation`, the part `best_on_val` uses), and is
scored on that validation part only: no test row is ever evaluated, so the setting the
README names as the lite one did not look at test numbers. An RBF SVR probe on the same
fixed-view features, fitted on the same rows, is the reference line.

    python benchmarks/select_lite_clip.py --root ../shared/data/AGIQA-3K \\
        --settings 1:-:2 22.6:-:2 22.6:-:0 22.6:1:0 --epochs 50
    python benchmarks/select_lite_clip.py --root ../shared/data/AGIQA-3K \\
        --settings 22.6:1:0 22.6:1:0:0.1 --models clip_agiqa --seeds 0 1

Prints one row per (setting, model): val SRCC at the last epoch, the best epoch's val SRCC
and the last epoch's mean within-generator val SRCC, with the seconds each run took. Runs
train two side by side on a 2-core CPU (`core.side_by_side`), each on one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from agiqa_lib.backbones.clip import create_clip
from agiqa_lib.clip_agiqa import study
from agiqa_lib.clip_agiqa.baselines import svr_probe
from agiqa_lib.clip_agiqa.batches import CachedFeatureBatches
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, create_clip_agiqa
from agiqa_lib.clip_agiqa.train import (EvalSet, TrainConfig, carve_validation, predict,
                                        train_clip_agiqa)
from agiqa_lib.core import side_by_side
from agiqa_lib.evaluation.metrics import within_group_srcc_stats


def parse_setting(text: str) -> tuple[float, float | None, int, float]:
    """"S:U:K[:D]" -> (feature scale, text scale or None for "-", augmented views, dropout)."""
    scale, text_scale, views, *dropout = text.split(":")
    return (float(scale), None if text_scale == "-" else float(text_scale), int(views),
            float(dropout[0]) if dropout else ClipAgiqaConfig.dropout)


def within_generator(pred: np.ndarray, mos: np.ndarray, generators: np.ndarray) -> float:
    """Mean over generators of the SRCC inside each generator (as the study's records)."""
    return within_group_srcc_stats(pred, mos, generators)["within_group_srcc"]


def val_run(views: torch.Tensor, fit_mos: np.ndarray, val_features: torch.Tensor,
            val_mos: np.ndarray, val_generators: np.ndarray, setting: str, use_text: bool,
            epochs: int, seed: int) -> dict:
    """Train one model on the fit rows and score the validation rows (nothing else)."""
    scale, text_scale, n_views, dropout = parse_setting(setting)
    bundle = create_clip("lite", device="cpu", precision="fp32")
    config = ClipAgiqaConfig(use_text=use_text, frozen_precision="fp32", feature_scale=scale,
                             text_feature_scale=text_scale, dropout=dropout)
    torch.manual_seed(seed)
    model = create_clip_agiqa("lite", config, bundle=bundle)
    train_config = TrainConfig(epochs=epochs, seed=seed)
    batches = CachedFeatureBatches(views[:n_views] if n_views else views[-1:], fit_mos,
                                   train_config.batch_size, seed)
    start = time.perf_counter()
    result = train_clip_agiqa(model, batches, {"val": EvalSet(val_features, val_mos)},
                              train_config, progress=False)
    model.load_trainable_state_dict(result.states["last"])
    pred = predict(model, val_features)
    history = result.history
    return {"setting": setting, "seed": seed,
            "model": "clip_agiqa" if use_text else "image_only_control",
            "val_last": float(history["val_srcc"].iloc[-1]),
            "val_best": float(history["val_srcc"].max()),
            "best_epoch": int(history["val_srcc"].idxmax()) + 1,
            "within_generator_last": within_generator(pred, val_mos, val_generators),
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="agiqa3k")
    parser.add_argument("--root", default=None)
    parser.add_argument("--settings", nargs="+", default=["1:-:2", "22.6:-:2", "22.6:-:0",
                                                          "22.6:1:0"],
                        help="S:U:K[:D] (feature scale : text scale or - : augmented views "
                             ": head dropout, 0.5 as released when left out)")
    parser.add_argument("--models", nargs="+", default=["clip_agiqa", "image_only_control"],
                        choices=["clip_agiqa", "image_only_control"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="each seed carves its own validation part and trains its own runs")
    parser.add_argument("--parallel-runs", type=int, default=0)
    args = parser.parse_args()
    rows = [row for seed in args.seeds for row in val_table(args, seed)]
    print("| S:U:K[:D] | seed | model | val SRCC last | best (epoch) | within-generator last | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['seed']} | {r['model']} | {r['val_last']:.4f} | "
              f"{r['val_best']:.4f} ({r['best_epoch']}) | {r['within_generator_last']:.4f} | "
              f"{r['seconds']:.0f} |")


def val_table(args: argparse.Namespace, seed: int) -> list[dict]:
    """The val rows of every (setting, model) for one seed's carved validation part."""
    max_views = max(parse_setting(s)[2] for s in args.settings)
    cfg = ClipStudyConfig(dataset=args.dataset, root=args.root, profile="lite",
                          n_aug_views=max_views, seed=seed, progress=True)
    data = study.prepare(cfg)
    fit, val = carve_validation(data.rows("train"), cfg.val_fraction, cfg.seed)
    fixed = data.features.test
    # [K + 1, n, D]: the augmented views of the fit rows, then their fixed view (K = 0 uses it)
    parts = [] if data.features.augmented is None else [data.features.training_views(fit)]
    views = torch.cat(parts + [fixed[torch.as_tensor(fit)].unsqueeze(0)])
    mos, generators = data.mos, data.df["generator"].to_numpy()
    val_features = fixed[torch.as_tensor(val)]
    print(f"{args.dataset}: {len(fit)} fit rows, {len(val)} validation rows carved from the "
          f"clip_agiqa train part (test never evaluated); {args.epochs} epochs, seed {seed}")
    svr = svr_probe(fixed[torch.as_tensor(fit)], mos[fit], val_features, seed=seed)
    print(f"SVR probe on the fixed view, seed {seed}: val SRCC "
          f"{spearmanr(svr, mos[val])[0]:.4f}, within-generator "
          f"{within_generator(svr, mos[val], generators[val]):.4f}")
    use_texts = [model == "clip_agiqa" for model in args.models]
    jobs = [(setting, use_text, args.epochs, seed)
            for setting in args.settings for use_text in use_texts]
    processes = side_by_side.worker_count(args.parallel_runs, len(jobs), torch.device("cpu"))
    return side_by_side.run_side_by_side(
        val_run, jobs, processes, shared=(views, mos[fit], val_features, mos[val],
                                          generators[val]), desc="settings")


if __name__ == "__main__":
    main()
