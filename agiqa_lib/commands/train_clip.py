"""`agiqa train-clip`: the notebook-02 CLIP-AGIQA experiment from the command line."""

from __future__ import annotations

import argparse

NAME = "train-clip"
HELP = ("train CLIP-AGIQA and its image-only control under every selection rule, run the "
        "zero-shot and probe baselines, print the table and save a checkpoint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset name (demo, agiqa3k, aigciqa2023, ...)")
    parser.add_argument("--root", default=None, help="dataset folder (not needed for demo)")
    parser.add_argument("--profile", default="lite", choices=("full", "lite", "tiny"))
    parser.add_argument("--protocol", default="clip_agiqa",
                        help="split protocol (clip_agiqa, prompt_disjoint, ma_agiqa, ...)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--aug-views", type=int, default=8,
                        help="cached augmented views per training image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of train carved out as val for best_on_val (when the split has none)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--out-dir", default="outputs", help="checkpoints go to OUT_DIR/checkpoints")
    parser.add_argument("--results", default=None, help="results JSONL file to append to")
    parser.add_argument("--frozen-precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="dtype of the frozen text tower during training (fp16 is for GPUs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is often fastest on a busy machine)")


def run(args: argparse.Namespace) -> int:
    import torch

    from agiqa_lib.clip_agiqa.study import run_clip_study

    if args.threads:
        torch.set_num_threads(args.threads)
    study = run_clip_study(args.dataset, root=args.root, profile=args.profile,
                           protocol=args.protocol, epochs=args.epochs, n_aug_views=args.aug_views,
                           seed=args.seed, out_dir=args.out_dir, results_path=args.results,
                           n_boot=args.n_boot, val_fraction=args.val_fraction,
                           frozen_precision=args.frozen_precision)
    columns = ["model", "selection", "srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi",
               "krcc", "rmse", "n", "epoch"]
    print(study.table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in study.seconds.items()))
    print(f"checkpoint: {study.checkpoint}")
    return 0
