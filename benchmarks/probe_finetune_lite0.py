"""Does fine-tuning Lite0's last block help `lite` MANIQA? A probe on the `ma_agiqa` val part.

MA-AGIQA fine-tunes its ViT-B/8; `lite` freezes Lite0 and trains MANIQA on cached tokens. This
probe caches the output of Lite0's `blocks[5]` (192 x 16 x 16 at 512 px) once and trains MANIQA
alone (the `lite` model, seed 20, the `lite` recipe: Adam 1e-4, weight decay 1e-5, batch 8,
cosine T_max 50 stepped per iteration, 10 epochs) in two arms that differ only in `blocks[6]`
(the block whose 320 channels are the last part of the 512 token channels): frozen, or trained
with the heads (its batch norms keep their ImageNet statistics). Neither arm augments (the
released rotations and flips act on token grids, which a live block would not see), so both
are compared with each other, not with the study's runs. Only val SRCC / PLCC are printed:
a setting is chosen on val, never on test.

    python benchmarks/probe_finetune_lite0.py cache                 # blocks[5] maps, once
    python benchmarks/probe_finetune_lite0.py frozen --threads 1 &  # the two arms side by side
    python benchmarks/probe_finetune_lite0.py tuned --threads 1
    python benchmarks/probe_finetune_lite0.py tuned --block-lr 1e-5 --threads 1  # block's own lr
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from agiqa_lib.backbones.iqa_backbone import _to_grid, image_transform
from agiqa_lib.backbones.weights import create_lite0
from agiqa_lib.core.io import atomic_path, open_rgb
from agiqa_lib.core.paths import cache_dir, shared_agiqa3k_root
from agiqa_lib.core.progress import progress_bar
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.train import new_model

EARLY = 192  # token channels of Lite0's first four maps (16 + 24 + 40 + 112)


def trunk_to_block5(trunk: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Lite0's stem and blocks[0..5]: [B, 3, S, S] -> [B, 192, S / 32, S / 32]."""
    x = trunk.bn1(trunk.conv_stem(images))
    for block in trunk.blocks[:6]:
        x = block(x)
    return x


def last_channels(block6: torch.nn.Module, maps: torch.Tensor, grid: int) -> torch.Tensor:
    """blocks[6] on cached blocks[5] maps, brought to the token grid as the cache does it."""
    x = _to_grid(block6(maps))  # [B, 320, 28, 28]
    return F.adaptive_avg_pool2d(x, grid).flatten(2)  # [B, 320, grid^2]


def cache_maps(data, path: Path) -> None:
    trunk = create_lite0(pretrained=True, features_only=True).eval()
    transform = image_transform(False, resize="pil", size=data.image_size)
    paths = data.df["path"].tolist()
    out = []
    with torch.inference_mode():
        for start in progress_bar(range(0, len(paths), 16), desc="blocks[5] maps"):
            batch = torch.stack([transform(open_rgb(p)) for p in paths[start:start + 16]])
            out.append(trunk_to_block5(trunk, batch.contiguous(
                memory_format=torch.channels_last)).half())
    with atomic_path(path) as tmp:
        torch.save(torch.cat(out).contiguous(), tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=("cache", "frozen", "tuned"))
    parser.add_argument("--root", default=shared_agiqa3k_root(),
                        help="AGIQA-3K folder (default: ../shared/data/AGIQA-3K when present)")
    parser.add_argument("--maps", default=str(cache_dir() / "probe_b5.pt"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--block-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = MAStudyConfig(dataset="agiqa3k", root=args.root, profile="lite",
                        variants=("maniqa",), progress=False)
    data = study.prepare(cfg)
    maps_path = Path(args.maps)
    if args.arm == "cache":
        cache_maps(data, maps_path)
        return
    maps = torch.load(maps_path, weights_only=True)
    early = data.tokens[:, :EARLY]
    model = new_model(data, "maniqa", 20)
    grid = model.cfg.maniqa.grid
    block6 = copy.deepcopy(create_lite0(pretrained=True, features_only=True).blocks[6]).eval()
    block6 = block6.to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # the live path equals the cached tokens (to fp16 rounding)
        live = last_channels(block6, maps[:8].float(), grid)
        print("max |live - cached| of the last 320 channels:",
              float((live - data.tokens[:8, EARLY:].float()).abs().max()))
    tuned = args.arm == "tuned"
    block6.requires_grad_(tuned)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if tuned:
        groups.append({"params": list(block6.parameters()), "lr": args.block_lr})
    optimizer = torch.optim.Adam(groups, lr=1e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
    mos = torch.tensor(data.df["mos"].to_numpy(dtype=np.float32))
    train, val = data.rows("train"), data.rows("val")

    def inputs(rows, grad: bool) -> torch.Tensor:
        rows = torch.as_tensor(rows)
        with torch.set_grad_enabled(grad):
            last = last_channels(block6, maps[rows].float(), grid)
        return torch.cat([early[rows].float(), last], dim=1)

    for epoch in range(args.epochs):
        start = time.perf_counter()
        torch.manual_seed(20 * 1000 + epoch)
        order = np.random.default_rng([20, epoch]).permutation(train)
        model.train()
        losses = []
        for i in range(0, len(order) - 7, 8):
            rows = order[i:i + 8]
            score = model.forward_tokens(inputs(rows, tuned)).score
            loss = F.mse_loss(score, mos[torch.as_tensor(rows)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model.forward_tokens(inputs(val[i:i + 32], False)).score
                              for i in range(0, len(val), 32)]).numpy()
        print(f"{args.arm} epoch {epoch + 1}: train loss {np.mean(losses):.4f}, val SRCC "
              f"{stats.spearmanr(pred, mos[val]).statistic:.4f}, PLCC "
              f"{stats.pearsonr(pred, mos[val]).statistic:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
