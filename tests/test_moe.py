"""MoE fusion: released parameter counts, gate variants, ablations."""

from __future__ import annotations

import pytest
import torch

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.ma_agiqa.maniqa import count_parameters
from agiqa_lib.ma_agiqa.moe import FUSION_VARIANTS, FusionConfig, MoEFusion, fusion_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_released_fusion_head_parameter_counts():
    fusion = MoEFusion(fusion_config("released_gate"))
    assert count_parameters(fusion.key) == 615_440
    assert [count_parameters(q) for q in fusion.queries] == [3_212_048, 3_212_048]
    assert count_parameters(fusion.gating) == 7_059
    assert count_parameters(fusion.output_fc) == 785
    assert count_parameters(fusion) == 7_047_380


def _inputs(b=4, f=10, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, generator=g), torch.randn(b, 2, d, generator=g)


def test_released_gate_has_no_softmax_and_matches_manual_formula():
    torch.manual_seed(0)
    fusion = MoEFusion(fusion_config("released_gate", feature_dim=10, semantic_dim=6)).eval()
    feature, semantic = _inputs()
    out = fusion(feature, semantic)
    q1 = torch.relu(fusion.queries[0][0](semantic[:, 0]))
    q2 = torch.relu(fusion.queries[1][0](semantic[:, 1]))
    k = fusion.key(feature)
    g = fusion.gating(torch.cat([q1, q2, k], dim=1))
    expected = fusion.output_fc(g[:, :1] * q1 + g[:, 1:2] * q2 + g[:, 2:] * k).squeeze(-1)
    torch.testing.assert_close(out.score, expected)
    torch.testing.assert_close(out.gates, g)
    assert not torch.allclose(out.gates.sum(1), torch.ones(4))  # raw gate, not a distribution
    assert fusion.expert_names == ["semantic_content", "coherence", "quality"]


def test_softmax_gate_is_a_distribution():
    torch.manual_seed(0)
    fusion = MoEFusion(fusion_config("softmax_gate", feature_dim=10, semantic_dim=6)).eval()
    out = fusion(*_inputs())
    torch.testing.assert_close(out.gates.sum(1), torch.ones(4))
    assert (out.gates > 0).all()


@pytest.mark.parametrize("variant, used, unused", [("semantic_only", 0, 1),
                                                   ("coherence_only", 1, 0)])
def test_one_question_ablation_ignores_the_other_question(variant, used, unused):
    torch.manual_seed(0)
    fusion = MoEFusion(fusion_config(variant, feature_dim=10, semantic_dim=6)).eval()
    feature, semantic = _inputs()
    out = fusion(feature, semantic)
    assert out.gates.shape == (4, 2)
    other = semantic.clone()
    other[:, unused] += 5.0
    torch.testing.assert_close(fusion(feature, other).score, out.score)
    moved = semantic.clone()
    moved[:, used] += 5.0
    assert not torch.allclose(fusion(feature, moved).score, out.score)


def test_concat_mlp_has_no_gate():
    fusion = MoEFusion(fusion_config("concat_mlp", feature_dim=10, semantic_dim=6)).eval()
    out = fusion(*_inputs())
    assert out.gates is None and out.score.shape == (4,)
    assert not hasattr(fusion, "gating")


def test_every_variant_builds_and_bad_configs_raise():
    for variant in FUSION_VARIANTS:
        out = MoEFusion(fusion_config(variant, feature_dim=10, semantic_dim=6))(*_inputs())
        assert out.score.shape == (4,)
    with pytest.raises(AgiqaError):
        fusion_config("no_such_variant")
    with pytest.raises(AgiqaError):
        MoEFusion(FusionConfig(gate="sigmoid"))
    with pytest.raises(AgiqaError):
        MoEFusion(FusionConfig(questions=("style",)))
