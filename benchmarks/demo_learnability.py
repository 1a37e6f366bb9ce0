"""How learnable is the demo's quality signal? Frozen Lite0 features + ridge vs generator mean.

Prompt-grouped 5-fold cross-validation on the default demo (512 images): SRCC of a ridge
regression on ImageNet EfficientNet-Lite0 pooled features, of the generator-mean baseline, and
of the two combined. Run: `HF_HUB_OFFLINE=1 python benchmarks/demo_learnability.py [--target T]`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold

from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.backbones.weights import create_lite0


def lite0_features(paths: list[str]) -> np.ndarray:
    """Pooled 1280-d Lite0 features at 224 px (bicubic, mean = std = 0.5)."""
    model = create_lite0(pretrained=True, num_classes=0).eval()
    feats = []
    with torch.no_grad():
        for start in range(0, len(paths), 50):
            batch = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BICUBIC))
                     for p in paths[start:start + 50]]
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
            feats.append(model((x - 0.5) / 0.5).numpy())
    return np.concatenate(feats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="mos_quality")
    args = parser.parse_args()
    torch.manual_seed(0)
    df = load_dataset("demo", target=args.target)
    x = lite0_features(df["path"].tolist())
    y = df["mos"].to_numpy()
    pred = {"lite0_ridge": np.zeros(len(df)), "generator_mean": np.zeros(len(df))}
    for train, test in GroupKFold(n_splits=5).split(x, y, groups=df["prompt"]):
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x[train], y[train])
        pred["lite0_ridge"][test] = ridge.predict(x[test])
        means = df.iloc[train].groupby("generator")["mos"].mean()
        pred["generator_mean"][test] = df["generator"].iloc[test].map(means).fillna(y[train].mean())
    for name, p in pred.items():
        print(f"{args.target} {name}: SRCC {spearmanr(p, y).statistic:.3f}")
    within = [spearmanr(pred["lite0_ridge"][i], y[i]).statistic
              for i in df.groupby("generator").indices.values()]
    print(f"{args.target} lite0_ridge mean within-generator SRCC {np.mean(within):.3f}")


if __name__ == "__main__":
    main()
