"""CLIP-AGIQA training from cached features vs end to end: time per epoch and test SRCC.

Both arms train the same model (same seed, recipe and number of epochs) on the same split;
the cached arm draws one of K pre-computed augmented views per image per epoch, the
end-to-end arm decodes, augments and encodes every image at every step. The ratio of the
per-epoch times is measured in one run, so machine load affects both arms alike.

    python benchmarks/bench_clip_cached.py --profile tiny --n 256 --epochs 3
    python benchmarks/bench_clip_cached.py --profile lite --dataset agiqa3k \
        --root ../shared/data/AGIQA-3K --n 512 --epochs 2 --aug-views 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=("full", "lite", "tiny"))
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--root", default=None)
    parser.add_argument("--n", type=int, default=256, help="images used (first n rows)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--aug-views", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("AGIQA_CACHE_DIR", tempfile.mkdtemp(prefix="bench-clip-"))

    from agiqa_lib.clip_agiqa.batches import CachedFeatureBatches, ImageBatches
    from agiqa_lib.clip_agiqa.train import EvalSet, TrainConfig, predict, train_clip_agiqa
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.core.features import clip_image_features
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.clip_agiqa.model import create_clip_agiqa
    from agiqa_lib.data.splits import make_split

    df = load_dataset(args.dataset, root=args.root).iloc[:args.n].reset_index(drop=True)
    split = make_split(df, "clip_agiqa").to_numpy()
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    mos = df["mos"].to_numpy(dtype=float)
    bundle = create_clip(args.profile)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, warmup_epochs=0)

    start = time.perf_counter()
    views = clip_image_features(df, bundle, f"bench-{args.dataset}", n_aug=args.aug_views,
                                seed=args.seed, progress=False)
    extract_s = time.perf_counter() - start
    aug = torch.stack([views[f"aug{k}"] for k in range(args.aug_views)])
    test_set = {"test": EvalSet(views["test"][test], mos[test])}

    def arm(batches) -> tuple[float, float]:
        torch.manual_seed(args.seed)
        model = create_clip_agiqa(args.profile, bundle=bundle)
        start = time.perf_counter()
        train_clip_agiqa(model, batches, test_set, config, progress=False)
        per_epoch = (time.perf_counter() - start) / args.epochs
        return per_epoch, float(stats.spearmanr(predict(model, views["test"][test]), mos[test])[0])

    cached_s, cached_srcc = arm(CachedFeatureBatches(aug[:, train], mos[train], 32, args.seed))
    encoder = create_clip_agiqa(args.profile, bundle=bundle).encode_image
    e2e_s, e2e_srcc = arm(ImageBatches(df["path"].iloc[train].tolist(), mos[train],
                                       bundle.preprocess_train, encoder, 32, args.seed))
    print(f"profile {args.profile}, {args.dataset}: {len(train)} train / {len(test)} test images, "
          f"{args.epochs} epochs, {args.aug_views} cached views, {args.threads} thread(s)")
    print(f"feature extraction (test + {args.aug_views} views, once): {extract_s:.1f} s")
    print(f"cached      : {cached_s:.2f} s/epoch, test SRCC {cached_srcc:.3f}")
    print(f"end-to-end  : {e2e_s:.2f} s/epoch, test SRCC {e2e_srcc:.3f}")
    print(f"speed-up per epoch: {e2e_s / cached_s:.1f}x; break-even after "
          f"{extract_s / max(e2e_s - cached_s, 1e-9):.1f} epochs")


if __name__ == "__main__":
    main()
