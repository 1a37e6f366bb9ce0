"""Do tokens of two image sides help `lite` MANIQA? A probe on the `ma_agiqa` val part.

MANIQA reads 224 px crops of larger images; `lite` reads AGIQA-3K whole at its own 512 px.
This probe trains MANIQA alone (the `lite` model and recipe, seed 20, as `agiqa train-ma`
does, with the released token-grid augmentation) on the cached 512 px tokens, or on the 512 px
and 224 px tokens concatenated on channels (1024 channels into the same 1x1 `in_proj`). Only
the val SRCC / PLCC of each epoch are printed: settings are chosen on val, never on test.

    python benchmarks/probe_multiscale_tokens.py 512 --threads 1 &   # two arms side by side
    python benchmarks/probe_multiscale_tokens.py 512+224 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from agiqa_lib.core.paths import shared_agiqa3k_root
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.train import new_model, train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=("512", "512+224"))
    parser.add_argument("--root", default=shared_agiqa3k_root(),
                        help="AGIQA-3K folder (default: ../shared/data/AGIQA-3K when present)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = MAStudyConfig(dataset="agiqa3k", root=args.root, profile="lite",
                        variants=("maniqa",), progress=False)
    data = study.prepare(cfg)  # 512 px, the lite default on AGIQA-3K
    if args.arm == "512+224":
        small = study.prepare(dataclasses.replace(cfg, image_size=224))
        assert (small.df["name"].to_numpy() == data.df["name"].to_numpy()).all()
        data = dataclasses.replace(data, tokens=torch.cat([data.tokens, small.tokens], 1),
                                   in_channels=data.in_channels + small.in_channels)
    run = train_run(new_model(data, "maniqa", args.seed), data,
                    cfg.train_config(args.seed, device="cpu"), progress=False)
    history = run.history[["epoch", "train_loss", "val_srcc", "val_plcc"]]
    print(f"arm {args.arm}, seed {args.seed}, tokens {tuple(data.tokens.shape)}, best epoch "
          f"on val {run.best_epoch}\n{history.round(4).to_string(index=False)}")


if __name__ == "__main__":
    main()
