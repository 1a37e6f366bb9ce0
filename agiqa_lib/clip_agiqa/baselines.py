"""Baselines and controls for CLIP-AGIQA, all on the same frozen CLIP image features.

- Zero-shot CLIP-IQA (Wang et al., AAAI 2023): softmax over the antonym prompts
  "Good photo." / "Bad photo.", score = probability of "Good photo.". (CLIP-IQA also drops
  the ResNet's positional embedding to accept any resolution; we use the plain CLIP at 224.)
  Meaningful only for CLIPs trained contrastively (`full`); `lite`'s projections are random.
- Ridge and SVR probes: regressors on the L2-normalised test-view features of the train rows,
  hyper-parameters chosen by 5-fold cross-validation on train only.
- The image-only control (CLIP-AGIQA's head without text features) is a `ClipAgiqaConfig`
  with `use_text=False`, trained by `clip_training` like the full model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

ANTONYM_PROMPTS = ("Good photo.", "Bad photo.")
RIDGE_ALPHAS = tuple(np.logspace(-3, 3, 13))
SVR_C_GRID = (0.1, 1.0, 10.0)


@torch.no_grad()
def zero_shot_clip_iqa(clip_model: torch.nn.Module, tokenizer: Any, image_features: torch.Tensor,
                       prompts: Sequence[str] = ANTONYM_PROMPTS) -> np.ndarray:
    """CLIP-IQA score of each image: softmax(logit_scale * cos(image, prompts))[:, 0]."""
    device = next(clip_model.parameters()).device
    text = clip_model.encode_text(tokenizer(list(prompts)).to(device)).float()
    image = F.normalize(image_features.float().to(device), dim=-1)
    logits = clip_model.logit_scale.exp().float() * image @ F.normalize(text, dim=-1).T  # [N, 2]
    return logits.softmax(dim=-1)[:, 0].cpu().numpy().astype(float)


def _normalised(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def ridge_probe(train_features: torch.Tensor, train_mos: Sequence[float],
                test_features: torch.Tensor) -> np.ndarray:
    """Ridge regression on frozen features (alpha by efficient leave-one-out CV on train)."""
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(_normalised(train_features), np.asarray(train_mos, float))
    return model.predict(_normalised(test_features)).astype(float)


def svr_probe(train_features: torch.Tensor, train_mos: Sequence[float],
              test_features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """RBF SVR on frozen features (C by 5-fold CV on train; the MOS is standardised inside)."""
    search = GridSearchCV(SVR(kernel="rbf", gamma="scale"), {"C": list(SVR_C_GRID)},
                          cv=KFold(5, shuffle=True, random_state=seed),
                          scoring="neg_mean_squared_error")
    model = TransformedTargetRegressor(regressor=search, transformer=StandardScaler())
    model.fit(_normalised(train_features), np.asarray(train_mos, float))
    return model.predict(_normalised(test_features)).astype(float)
