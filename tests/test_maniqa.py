"""MANIQA branch: exact released parameter counts, the TABlock reshape, Swin fidelity, shapes."""

from __future__ import annotations

import pytest
import torch

from agiqa_lib.ma_agiqa.maniqa import (Maniqa, ManiqaConfig, SwinBlock, TABlock, count_parameters)


@pytest.fixture(scope="module")
def full_maniqa() -> Maniqa:
    torch.manual_seed(0)
    return Maniqa(ManiqaConfig())


@pytest.mark.parametrize("part, expected", [
    ("tablock1", 3_692_640), ("conv1", 2_360_064), ("swin1", 24_805_648),
    ("tablock2", 3_692_640), ("conv2", 295_296), ("swin2", 7_391_248),
    ("fc_score", 148_225), ("fc_weight", 148_225),
])
def test_full_parameter_counts_per_module(full_maniqa, part, expected):
    assert count_parameters(getattr(full_maniqa, part)) == expected


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_full_head_total_and_no_unused_modules(full_maniqa):
    # MANIQA branch 114,164,578 minus the ViT-B/8 blocks 0-9 (71,630,592)
    assert count_parameters(full_maniqa) == 114_164_578 - 71_630_592
    names = {n.split(".")[0] for n, _ in full_maniqa.named_parameters()}
    assert names == {"tablock1", "conv1", "swin1", "tablock2", "conv2", "swin2",
                     "fc_score", "fc_weight"}


def test_full_vit_blocks_and_whole_model_counts():
    from agiqa_lib.ma_agiqa.model import create_ma_agiqa

    model = create_ma_agiqa("full", "released_gate", pretrained=False)  # random, no download
    assert count_parameters(model.backbone) == 71_630_592
    assert count_parameters(model.maniqa) + count_parameters(model.backbone) == 114_164_578
    assert count_parameters(model.fusion) == 7_047_380
    assert count_parameters(model) == 121_211_958
    assert model.cfg.maniqa.in_channels == 3072
    alone = create_ma_agiqa("full", "maniqa", pretrained=False)
    assert count_parameters(alone) == 114_164_578


def test_tablock_reproduces_released_reshape_and_clean_flag():
    torch.manual_seed(0)
    block = TABlock(16, drop=0.0).eval()
    x = torch.randn(2, 6, 16)
    q, k, v = block.c_q(x), block.c_k(x), block.c_v(x)
    attn = (q @ k.transpose(-2, -1) * 16 ** -0.5).softmax(dim=-1)
    released = x + (attn @ v).transpose(1, 2).reshape(2, 6, 16)
    clean = x + attn @ v
    torch.testing.assert_close(block(x), released)
    block.clean = True
    torch.testing.assert_close(block(x), clean)
    assert not torch.allclose(released, clean)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_matches_timm(shift):
    """Same weights in timm's SwinTransformerBlock give the same output (W-MSA and SW-MSA)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    ours = SwinBlock(dim=32, grid=8, num_heads=4, window=4, shift=shift, dim_mlp=48,
                     drop_path=0.0).eval()
    with torch.no_grad():
        ours.attn.relative_position_bias_table.normal_()
    ref = SwinTransformerBlock(32, (8, 8), num_heads=4, window_size=4, shift_size=shift,
                               mlp_ratio=48 / 32).eval()
    state = {k.replace("mlp.0", "mlp.fc1").replace("mlp.2", "mlp.fc2"): v
             for k, v in ours.state_dict().items()}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all("index" in m or "mask" in m for m in missing)
    x = torch.randn(2, 64, 32)
    torch.testing.assert_close(ours(x), ref(x.view(2, 8, 8, 32)).reshape(2, 64, 32),
                               atol=1e-5, rtol=1e-5)


def test_forward_shapes_feature_and_score():
    cfg = ManiqaConfig(in_channels=12, grid=8, embed_dim=16, dim_mlp=16, num_heads=(2, 2),
                       window_size=4)
    torch.manual_seed(0)
    model = Maniqa(cfg).eval()
    out = model(torch.randn(3, 12, 64))
    assert out.f.shape == out.w.shape == out.feature.shape == (3, 64)
    assert out.score.shape == (3,)
    assert (out.f >= 0).all() and ((out.w > 0) & (out.w < 1)).all()
    torch.testing.assert_close(out.score, (out.f * out.w).sum(1) / out.w.sum(1))


def test_input_projection_and_drop_path_schedule():
    cfg = ManiqaConfig(in_channels=40, in_proj=8, grid=4, embed_dim=16, dim_mlp=16,
                       num_heads=(2, 2), window_size=2)
    model = Maniqa(cfg)
    assert model.in_proj.weight.shape == (8, 40, 1)
    assert model.conv1.in_channels == 8
    rates = [getattr(b.drop_path, "drop_prob", 0.0)
             for layer in model.swin1.layers for b in layer.blocks]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    shifts = [b.shift for layer in model.swin1.layers for b in layer.blocks]
    assert shifts == [0, 1, 0, 1]
