"""Batch norm folded into the convolutions of a frozen backbone (`core.folding`)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from agiqa_lib.backbones import weights
from agiqa_lib.core.folding import fold_batchnorm


def _with_nontrivial_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters, so a wrong fold shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"features_only": True}])
def test_folded_lite0_gives_the_same_features_without_batch_norm(kwargs):
    model = _with_nontrivial_statistics(timm.create_model(weights.LITE0_ARCH, **kwargs))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, actual = model(x), folded(x)
    for e, a in zip(expected if isinstance(expected, list) else [expected],
                    actual if isinstance(actual, list) else [actual], strict=True):
        # random weights and statistics amplify float32 rounding with depth (1.6e-5 at the
        # last stage); a wrong fold is off by the scale of the features
        assert (a - e).abs().max() <= 1e-4 * e.abs().max()
    # the caller's model, its names and weights, is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_packaged_lite0_folds_in_channels_last_and_keeps_its_activations():
    model = weights.create_lite0(num_classes=0).eval()
    folded = fold_batchnorm(model)
    convs = [p for p in folded.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # every norm of Lite0 but the last one of each block is followed by ReLU6
    assert sum(isinstance(m, nn.ReLU6) for m in folded.modules()) == \
        sum(isinstance(m, nn.ReLU6) for m in model.modules()) > 0
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        expected, actual = model(x), folded(x)
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_a_model_without_batch_norm_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4), nn.Linear(4, 2))
    assert fold_batchnorm(model) is model


def test_a_norm_not_after_its_convolution_is_left_alone():
    """Only a Conv2d registered right before a BatchNorm2d of its width is folded."""
    model = _with_nontrivial_statistics(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)))
    assert fold_batchnorm(model) is model
