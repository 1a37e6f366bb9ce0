"""Does a ranking term help `lite` MANIQA? A probe on the `ma_agiqa` val part.

SRCC and the within-generator SRCC are rank measures, the released loss is MSE on raw MOS.
This probe trains MANIQA alone (the `lite` model and recipe, seed 20: Adam 1e-4, weight decay
1e-5, batch 8, cosine T_max 50 stepped per iteration, 10 epochs, the released token-grid
rotations and flips) in two arms that differ only in the loss: `mse` (released), or
`mse+rank`: MSE plus `--weight` times the RankNet term mean(softplus(-(s_i - s_j) sign(y_i -
y_j))) over the batch's pairs with different MOS, which also ranks images of one generator
against each other when a batch holds several. Both arms run this script's loop, so they are
compared with each other. Only val SRCC / PLCC / within-generator SRCC are printed: settings
are chosen on val, never on test.

    python benchmarks/probe_rank_loss.py mse --threads 1 &   # the two arms side by side
    python benchmarks/probe_rank_loss.py mse+rank --threads 1
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils.data import DataLoader

from agiqa_lib.evaluation.metrics import within_group_srcc_stats
from agiqa_lib.ma_agiqa.data import MAItems
from agiqa_lib.ma_agiqa.train import adam, predict
from probe_weight_average import lite_maniqa, probe_parser


def rank_term(score: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
    """RankNet loss over the pairs (i, j) of a batch whose MOS differ (0 when none do)."""
    order = torch.sign(mos[:, None] - mos[None, :])
    pairs = order != 0
    if not pairs.any():
        return score.sum() * 0
    return F.softplus(-(score[:, None] - score[None, :]) * order)[pairs].mean()


def main() -> None:
    parser = probe_parser(__doc__.splitlines()[0])
    parser.add_argument("arm", choices=("mse", "mse+rank"))
    parser.add_argument("--weight", type=float, default=1.0, help="of the ranking term")
    args = parser.parse_args()
    data, train_cfg, model = lite_maniqa(args)
    optimizer = adam([p for p in model.parameters() if p.requires_grad], train_cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_cfg.t_max,
                                                           eta_min=train_cfg.eta_min)
    items = MAItems(data, data.rows("train"), model.cfg.maniqa.grid, args.seed,
                    augmentation=(train_cfg.aug_prob, train_cfg.flip))
    val = data.rows("val")
    mos, generators = data.df["mos"].to_numpy(dtype=float), data.df["generator"].to_numpy()
    weight = args.weight if args.arm == "mse+rank" else 0.0
    history = []
    for epoch in range(train_cfg.epochs):
        seed = args.seed * 1000 + epoch
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        items.epoch = epoch
        model.train()
        loader = DataLoader(items, batch_size=train_cfg.batch_size, shuffle=True,
                            drop_last=True, generator=torch.Generator().manual_seed(seed))
        for x, _, y, _ in loader:
            score = model.forward_tokens(x, None).score
            loss = F.mse_loss(score, y) + weight * rank_term(score, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        pred, _ = predict(model, data, val, train_cfg)
        within = within_group_srcc_stats(pred, mos[val], generators[val])["within_group_srcc"]
        history.append({"epoch": epoch + 1, "val_srcc": stats.spearmanr(pred, mos[val])[0],
                        "val_plcc": stats.pearsonr(pred, mos[val])[0], "val_within": within})
        print(f"{args.arm} epoch {epoch + 1}: val SRCC {history[-1]['val_srcc']:.4f}",
              flush=True)
    table = pd.DataFrame(history)
    best = table.loc[(table["val_srcc"] + table["val_plcc"]).idxmax()]
    print(f"arm {args.arm} (rank weight {weight:g}), seed {args.seed}, best epoch on val "
          f"{int(best['epoch'])}\n{table.round(4).to_string(index=False)}")


if __name__ == "__main__":
    main()
