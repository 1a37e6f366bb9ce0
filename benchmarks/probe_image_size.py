"""Which side should `lite` read images at? A val-only probe on frozen Lite0 maps.

For each input side, every image of the dataset goes through the frozen, packaged Lite0 (batch
norms folded); the mean and standard deviation of each of its five feature maps make one
pooled vector per image. A ridge regression (alpha by internal CV) and an RBF SVR are fitted
on the `ma_agiqa` train part and scored on its val part only: the test part is never read, so
the choice of `core.profiles` "lite" `ma_max_image_size` did not look at test numbers.

    python benchmarks/probe_image_size.py --root ../shared/data/AGIQA-3K --sizes 224 336 448 512

Prints one table row per side and model (val SRCC, mean within-generator val SRCC) and the
extraction seconds per side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from agiqa_lib.backbones.iqa_backbone import image_transform
from agiqa_lib.backbones.weights import create_lite0
from agiqa_lib.core.folding import fold_batchnorm
from agiqa_lib.core.io import open_rgb
from agiqa_lib.core.progress import progress_bar
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.data.splits import make_split
from agiqa_lib.evaluation.metrics import within_group_srcc_stats


@torch.inference_mode()
def pooled_maps(paths: list[str], size: int, batch_size: int = 16) -> np.ndarray:
    """[N, 2 x 512]: per-channel mean and std of Lite0's five maps for images read at `size`."""
    trunk = fold_batchnorm(create_lite0(pretrained=True, features_only=True).eval())
    transform = image_transform(False, size=size)
    rows = []
    for start in progress_bar(range(0, len(paths), batch_size), desc=f"{size} px"):
        x = torch.stack([transform(open_rgb(p)) for p in paths[start:start + batch_size]])
        maps = trunk(x.contiguous(memory_format=torch.channels_last))
        rows.append(torch.cat([torch.cat([m.mean((2, 3)), m.std((2, 3))], 1) for m in maps], 1))
    return torch.cat(rows).numpy()


def val_scores(features: np.ndarray, mos: np.ndarray, generators: np.ndarray,
               split: np.ndarray) -> dict[str, tuple[float, float]]:
    """{model: (val SRCC, mean within-generator val SRCC)} of probes fitted on the train part."""
    train, val = split == "train", split == "val"
    scaler = StandardScaler().fit(features[train])
    fit_x, val_x = scaler.transform(features[train]), scaler.transform(features[val])
    out = {}
    for name, model in (("ridge", RidgeCV(alphas=np.logspace(-1, 4, 16))), ("svr", SVR())):
        pred = model.fit(fit_x, mos[train]).predict(val_x)
        within = within_group_srcc_stats(pred, mos[val], generators[val])["within_group_srcc"]
        out[name] = (float(spearmanr(pred, mos[val])[0]), within)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="agiqa3k")
    parser.add_argument("--root", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 336, 448, 512])
    parser.add_argument("--limit", type=int, default=None, help="first N images (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    df = load_dataset(args.dataset, args.root)
    split = make_split(df, "ma_agiqa").to_numpy()
    if args.limit:
        df, split = df.iloc[:args.limit], split[:args.limit]
    paths, mos = [str(p) for p in df["path"]], df["mos"].to_numpy()
    generators = df["generator"].to_numpy()
    print(f"{args.dataset}: {len(df)} images, {int((split == 'train').sum())} train, "
          f"{int((split == 'val').sum())} val (test never read)")
    print("| side | probe | val SRCC | within-generator val SRCC | extraction s |\n|---|---|---|---|---|")
    for size in args.sizes:
        start = time.perf_counter()
        features = pooled_maps(paths, size)
        seconds = time.perf_counter() - start
        for name, (srcc, within) in val_scores(features, mos, generators, split).items():
            print(f"| {size} | {name} | {srcc:.4f} | {within:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
