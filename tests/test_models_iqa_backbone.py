"""IQA backbone profiles: 28 x 28 token grids, MANIQA's ViT-B/8 cut, Lite0 grid layout, errors."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.backbones.iqa_backbone import (
    FULL_VIT,
    IqaBackbone,
    Lite0GridTokens,
    VitBlockTokens,
    _load_vit_file,
    create_iqa_backbone,
)

VIT_B8_BLOCKS_0_9 = 71_630_592  # MANIQA's ViT-B/8 up to block 9, incl. patch/pos embed and cls


@pytest.fixture(scope="module")
def vit_b8_file(tmp_path_factory):
    """A random, complete ViT-B/8 state dict saved as a local checkpoint (bf16, to save time)."""
    vit = timm.create_model(FULL_VIT, pretrained=False)
    path = tmp_path_factory.mktemp("vit") / "vit_b8.safetensors"
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in vit.state_dict().items()}
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def full_from_file(vit_b8_file):
    return create_iqa_backbone("full", checkpoint=vit_b8_file)


@pytest.fixture(scope="module")
def lite():
    return create_iqa_backbone("lite")


def _batch(n=2, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("profile, channels", [("tiny", 64), ("lite", 512)])
def test_profiles_give_documented_token_grids(profile, channels, lite):
    backbone = lite if profile == "lite" else create_iqa_backbone(profile)
    assert isinstance(backbone, IqaBackbone)
    assert backbone.out_channels == channels
    assert (backbone.input_size, backbone.interpolation) == (224, "bicubic")
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        tokens = backbone(_batch(1))
    assert tokens.shape == (1, channels, 784)
    assert torch.isfinite(tokens).all()


def test_full_keeps_only_blocks_0_to_9(full_from_file):
    backbone = full_from_file
    assert backbone.out_channels == 3072
    assert sum(p.numel() for p in backbone.parameters()) == VIT_B8_BLOCKS_0_9
    assert len(backbone.vit.blocks) == 10
    names = list(backbone.state_dict())
    assert not any(n.startswith(("vit.norm.", "vit.head.", "vit.fc_norm.")) for n in names)
    with torch.no_grad():
        assert backbone(_batch(1)).shape == (1, 3072, 784)


def test_full_checkpoint_file_is_loaded(full_from_file, vit_b8_file):
    saved = load_file(str(vit_b8_file))
    state = full_from_file.vit.state_dict()
    for name in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.9.mlp.fc2.weight"):
        assert torch.equal(state[name], saved[name].float()), name
    assert full_from_file.model_id.startswith(f"timm:{FULL_VIT}:sha256-")


def test_full_without_pretrained_weights_builds_offline(no_network):
    backbone = create_iqa_backbone("full", pretrained=False)
    assert backbone.model_id.startswith(f"random:{FULL_VIT}:")
    assert backbone.out_channels == 3072 and len(backbone.vit.blocks) == 10


def test_vit_tokens_are_block_outputs_after_residual_without_cls():
    backbone = create_iqa_backbone("tiny")
    assert isinstance(backbone, VitBlockTokens)
    vit, x = backbone.vit, _batch()
    with torch.no_grad():
        h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        taps = []
        for index, block in enumerate(vit.blocks):
            h = block(h)
            if index in backbone.taps:
                taps.append(h[:, vit.num_prefix_tokens:])
        expected = torch.cat(taps, dim=-1).transpose(1, 2)
        tokens = backbone(x)
    torch.testing.assert_close(tokens, expected)


def test_lite_grid_concatenates_resampled_lite0_maps(lite):
    backbone = lite
    assert isinstance(backbone, Lite0GridTokens)
    x = _batch()
    with torch.no_grad():
        maps = backbone.trunk(x)
        tokens = backbone(x).reshape(2, 512, 28, 28)
    assert [m.shape[1] for m in maps] == [16, 24, 40, 112, 320]
    torch.testing.assert_close(tokens[:, :16], F.adaptive_avg_pool2d(maps[0], 28))
    torch.testing.assert_close(tokens[:, 40:80], maps[2])  # stride-8 map: already 28 x 28
    torch.testing.assert_close(tokens[:, 192:], F.interpolate(maps[4], size=(28, 28),
                                                              mode="bilinear", align_corners=False))


def test_lite_and_tiny_model_ids_are_stable(lite):
    assert create_iqa_backbone("tiny").model_id == create_iqa_backbone("tiny").model_id
    assert lite.model_id.startswith("lite:effnet-lite0-grid28:")
    assert create_iqa_backbone("lite").model_id == lite.model_id


def test_transform_is_bicubic_resize_to_224_with_half_normalisation():
    backbone = create_iqa_backbone("tiny")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 180, 3), dtype=np.uint8))
    out = backbone.transform(False)(image)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, backbone.transform(False)(image))
    white = backbone.transform(False)(Image.new("RGB", (50, 70), (255, 255, 255)))
    torch.testing.assert_close(white, torch.ones(3, 224, 224))
    gray = backbone.transform(True)(Image.new("L", (50, 70), 0))
    torch.testing.assert_close(gray, -torch.ones(3, 224, 224))


def test_offline_full_without_weights_is_one_clear_error(no_network):
    with pytest.raises(AgiqaError) as info:
        create_iqa_backbone("full", pretrained=True)
    message = str(info.value)
    assert FULL_VIT in message and "checkpoint=PATH" in message and "internet" in message


@pytest.mark.parametrize("kwargs, match", [
    (dict(profile="huge"), "unknown profile"),
    (dict(profile="lite", checkpoint="x.safetensors"), "profile 'full' only"),
    (dict(profile="full", checkpoint="/nonexistent/vit.safetensors"), "does not exist"),
])
def test_bad_options_are_agiqa_errors(kwargs, match, no_network):
    with pytest.raises(AgiqaError, match=match):
        create_iqa_backbone(**kwargs)


def test_checkpoint_of_another_model_is_an_agiqa_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    vit = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=8, depth=1,
                                        num_heads=1)
    with pytest.raises(AgiqaError, match="does not hold"):
        _load_vit_file(vit, path)
