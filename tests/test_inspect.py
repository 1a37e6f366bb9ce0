"""The inside views of notebooks 02-04: prompt anatomy, folded bias, stage shapes, reshape,
gate weights and every MLLM's token layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agiqa_lib.clip_agiqa import inspect as clip_inspect
from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, create_clip_agiqa
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.ma_agiqa import inspect as ma_inspect
from agiqa_lib.ma_agiqa.data import PreparedData
from agiqa_lib.ma_agiqa.model import create_ma_agiqa
from agiqa_lib.ma_agiqa.train import RunResult

LAYOUT_KEYS = {"prompt", "n_text_tokens", "n_image_tokens", "n_positions", "image_span",
               "text_before", "text_after"}


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return create_clip_agiqa("tiny")


def test_prompt_tokens_name_every_position(clip_model):
    table = clip_inspect.prompt_tokens(clip_model, class_index=5)
    roles = table["role"].tolist()
    assert roles[0] == "start token" and roles[-1] == "end token"
    assert roles[1:17] == [f"context vector {i} (learned)" for i in range(16)]
    assert "perfect" in table["token"].tolist()


def test_prompt_tokens_of_the_openai_tower_show_padding(tmp_path):
    from agiqa_lib.backbones.clip import save_tiny_full_clip

    model = create_clip_agiqa("full", checkpoint=str(save_tiny_full_clip(tmp_path / "clip")))
    ids = model.prompt_learner.tokenized_prompts
    assert ids.shape[1] < 77  # cut after the longest prompt: padding no prompt needs is gone
    lengths = (ids != 0).sum(dim=1)
    short = int(lengths.argmin())  # the shortest prompt still shows its padding
    table = clip_inspect.prompt_tokens(model, class_index=short)
    roles = table["role"].tolist()
    assert roles[lengths[short] - 1] == "end token (pooled)"
    if lengths[short] < ids.shape[1]:
        assert table["token"].iloc[-1] == "(padding)"


def test_prompt_shapes_follow_the_tensors(clip_model):
    shapes = clip_inspect.prompt_shapes(clip_model)["shape"].tolist()
    width, dim = clip_model.text_tower.width, clip_model.embed_dim
    length = clip_model.prompt_learner.tokenized_prompts.shape[1]
    assert shapes == [[6, length], [16, width], [6, length, width], [6, dim], [1, 7 * dim]]


def test_text_features_are_six_unit_vectors(clip_model):
    assert clip_inspect.text_features(clip_model, dims=4).shape == (6, 5)
    similarity = clip_inspect.text_feature_similarity(clip_model).to_numpy()
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-6)


def test_text_features_fold_into_the_first_bias(clip_model):
    with torch.no_grad():  # a trained-looking model: context and head away from their init
        clip_model.prompt_learner.ctx.normal_(std=0.5)
        clip_model.regression[1].bias.normal_()
    clip_model.train()
    features = torch.randn(32, clip_model.embed_dim) * 3
    assert clip_inspect.folded_bias_check(clip_model, features) < 1e-5
    assert clip_model.training  # the check restores the mode it found
    folded = clip_inspect.fold_text_into_bias(clip_model)
    assert folded[0].in_features == clip_model.embed_dim


def test_text_features_fold_into_the_first_bias_at_any_feature_scale():
    """With feature_scale s the folded bias uses s * text and the image weights s * W_x."""
    torch.manual_seed(1)
    model = create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6))
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(std=0.5)
        model.regression[1].bias.normal_()
    features = torch.randn(32, model.embed_dim) * 3
    model.eval()
    with torch.no_grad():
        scores = model.score_features(features)
        assert clip_inspect.folded_bias_check(model, features) < 1e-5 * (1 + scores.abs().max())
        assert "feature_scale 22.6" in clip_inspect.prompt_shapes(model)["what"].iloc[-1]
        # the fold of the release (unscaled) would be off by far more: the check can fail
        first, last = model.regression[1], model.regression[4]
        dim = model.embed_dim
        image = torch.nn.functional.normalize(features, dim=-1)
        unscaled = torch.relu(image @ first.weight[:, :dim].T + first.bias
                              + first.weight[:, dim:] @ model.text_features().flatten())
        assert (last(unscaled).squeeze(-1) - scores).abs().max() > 1e-2


def test_text_features_fold_into_the_first_bias_with_their_own_scale():
    """Image feature times 22.6, text features at unit norm: the fold scales W_x by 22.6 and
    adds the unscaled text features to the bias; the shapes table says both scales."""
    torch.manual_seed(2)
    model = create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6, text_feature_scale=1.0))
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(std=0.5)
    features = torch.randn(32, model.embed_dim) * 3
    model.eval()
    with torch.no_grad():
        scores = model.score_features(features)
        assert clip_inspect.folded_bias_check(model, features) < 1e-5 * (1 + scores.abs().max())
        what = clip_inspect.prompt_shapes(model)["what"].iloc[-1]
        assert "feature_scale 22.6" in what and "text_feature_scale 1" in what
        both = create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6)).eval()
        both.load_trainable_state_dict(model.trainable_state_dict())
        assert (clip_inspect.fold_text_into_bias(both)(torch.nn.functional.normalize(features, dim=-1))
                .squeeze(-1) - scores).abs().max() > 1e-3  # the wrong fold is caught


def test_image_only_control_has_no_prompt_to_inspect():
    control = create_clip_agiqa("tiny", ClipAgiqaConfig(use_text=False))
    with pytest.raises(AgiqaError, match="image-only control"):
        clip_inspect.prompt_shapes(control)


def test_trace_lists_every_stage_with_shapes():
    model = create_ma_agiqa("tiny", "released_gate", pretrained=False)
    tokens, semantic = torch.randn(3, 64, 16), torch.randn(3, 2, 64)
    table = ma_inspect.trace_maniqa(model, tokens, semantic)
    assert table.index[0].startswith("tablock1[0]") and table.loc["score", "output"] == "[3]"
    assert table.loc["quality feature f * w (MA-AGIQA)", "output"] == "[3, 16]"
    assert table.loc["gate weights", "output"] == "[3, 3]"
    assert not model.maniqa.conv1._forward_hooks  # hooks removed
    images = ma_inspect.trace_maniqa(create_ma_agiqa("tiny", "maniqa", pretrained=False),
                                     torch.randn(1, 3, 224, 224))
    assert images.iloc[0]["output"] == "[1, 64, 784]" and "gate weights" not in images.index


def test_tablock_demo_shows_the_released_scramble():
    table = ma_inspect.tablock_reshape_demo(channels=3, tokens=4)
    clean = table["clean: attn @ v"]
    released = table["released: .transpose(1, 2).reshape(B, C, N)"]
    assert clean.loc["c1"].tolist() == ["c1·n0", "c1·n1", "c1·n2", "c1·n3"]
    assert released.loc["c0"].tolist() == ["c0·n0", "c1·n0", "c2·n0", "c0·n1"]
    assert sorted(released.to_numpy().ravel()) == sorted(clean.to_numpy().ravel())


def _prepared(n: int = 12) -> PreparedData:
    df = pd.DataFrame({"name": [f"im{i}.png" for i in range(n)], "path": "",
                       "generator": [f"g{i % 3}" for i in range(n)],
                       "mos": np.linspace(1, 5, n)})
    split = pd.Series(["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    return PreparedData("demo", "tiny", "ma_agiqa", df, split,
                        tokens=torch.randn(n, 64, 16).half(), semantic=torch.randn(n, 2, 64),
                        in_channels=64)


def test_gate_weights_of_a_model_and_of_a_run():
    data = _prepared()
    inputs, semantic = ma_inspect.example_batch(data, n=2)
    assert inputs.shape == (2, 64, 16) and semantic.shape == (2, 2, 64)
    torch.manual_seed(0)
    model = create_ma_agiqa("tiny", "released_gate", pretrained=False)
    table = ma_inspect.gate_weights(model, data, n=3)
    gates = ["gate: semantic_content", "gate: coherence", "gate: quality"]
    assert list(table.columns) == ["name", "mos", "pred", *gates, "sum of gates", "any negative"]
    np.testing.assert_allclose(table["sum of gates"], table[gates].sum(axis=1))
    run = RunResult("softmax_gate", 20, pd.DataFrame(), 1, {}, table.rename(
        columns={g: g.replace("gate: ", "gate_") for g in gates}), model, 0.0)
    assert len(ma_inspect.gate_weights(run, n=2)) == 2
    with pytest.raises(AgiqaError, match="no gate"):
        ma_inspect.gate_weights(create_ma_agiqa("tiny", "maniqa", pretrained=False), data)


def _check_layout(layout: dict, n_image: int) -> None:
    assert set(layout) == LAYOUT_KEYS and layout["n_image_tokens"] == n_image
    start, end = layout["image_span"]
    assert start == len(layout["text_before"]) and end - start == n_image
    assert layout["n_positions"] == end + len(layout["text_after"])


@pytest.mark.slow
def test_every_encoder_reports_its_token_layout():
    from agiqa_lib.backbones.mllm import create_mllm, tiny_vlm_dir
    from agiqa_lib.backbones.tiny_vlm import build_tiny_vlm
    from agiqa_lib.viz.semantic import token_layout_table

    question = "Evaluate if the image quality is compromised due to violations of coherence."
    lite = create_mllm("lite")
    _check_layout(lite.token_layout(question), 4)
    assert lite.token_layout(question)["text_after"] == ["[SEP]"]  # image after the question
    before = create_mllm("lite", image_placement="before_text").token_layout(question)
    assert before["image_span"] == (1, 5)
    _check_layout(create_mllm("tiny").token_layout(question), 65)
    llava = create_mllm("full", model_id=str(build_tiny_vlm(tiny_vlm_dir())))
    layout = llava.token_layout(question)
    _check_layout(layout, 16)
    assert "<image>" in layout["prompt"] and layout["prompt"].index(question) < layout["prompt"].index("<image>")
    table = token_layout_table(lite)
    assert list(table["image tokens"]) == [4, 4] and (table["image share of the mean"] < 1).all()
