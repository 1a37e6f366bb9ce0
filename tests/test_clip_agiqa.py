"""CLIP-AGIQA model: prompt learner, head shapes, frozen encoders, binning, baselines, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clip_standin import StandInClip, StandInTower, standin_model
from scipy import stats

from agiqa_lib.clip_agiqa.binning import (QUALITY_CLASSES, RELEASED_CUTPOINTS, assign_classes,
                               quantile_cutpoints, resolve_cutpoints)
from agiqa_lib.clip_agiqa.baselines import ridge_probe, svr_probe, zero_shot_clip_iqa
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, PromptLearner


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- prompt learner -------------------------------------------------------------------------

@pytest.mark.parametrize("class_specific", [False, True])
def test_prompt_learner_inserts_context_after_start_token(class_specific):
    clip = StandInClip()
    tower = StandInTower(clip)
    torch.manual_seed(0)
    learner = PromptLearner(tower, QUALITY_CLASSES, n_ctx=16, class_specific=class_specific)
    width = tower.width
    assert learner.ctx.shape == ((6, 16, width) if class_specific else (16, width))
    prompts = learner()
    assert prompts.shape == (6, 24, width)
    ids = tower.tokenize([" ".join(["X"] * 16) + f" {c}." for c in QUALITY_CLASSES])
    embeds = tower.token_embedding(ids)
    for c in range(6):
        ctx = learner.ctx[c] if class_specific else learner.ctx
        assert torch.equal(prompts[c, 1:17], ctx)
        assert torch.equal(prompts[c, 0], embeds[c, 0])  # start token untouched
        assert torch.equal(prompts[c, 17:], embeds[c, 17:])  # class word, ".", end, padding
    assert torch.equal(learner.tokenized_prompts, ids)
    # only the context is state: the fixed tokens are rebuilt from the class names
    assert list(learner.state_dict()) == ["ctx"]


def test_context_is_random_normal_with_std_002():
    torch.manual_seed(1)
    learner = PromptLearner(StandInTower(StandInClip(width=64)), QUALITY_CLASSES, n_ctx=16)
    values = learner.ctx.detach().flatten().numpy()
    assert abs(values.mean()) < 0.004
    assert 0.018 < values.std() < 0.022


# --- the model --------------------------------------------------------------------------------

def test_head_input_is_image_plus_six_text_features():
    model = standin_model()
    d = model.embed_dim
    assert model.regression[1].in_features == 7 * d
    assert model.regression[4].out_features == 1
    assert [type(m).__name__ for m in model.regression] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.regression[0].p == 0.5
    text = model.text_features()
    assert text.shape == (6, d)
    assert torch.allclose(text.norm(dim=-1), torch.ones(6), atol=1e-5)
    model.eval()
    assert model.score_features(torch.randn(5, d)).shape == (5,)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3,)


def test_image_only_control_has_same_head_without_text():
    model = standin_model(use_text=False)
    assert model.prompt_learner is None
    assert model.text_features() is None
    assert model.regression[1].in_features == model.embed_dim
    model.eval()
    assert model.score_features(torch.randn(4, model.embed_dim)).shape == (4,)


def test_score_matches_released_per_image_concatenation():
    """The batched concatenation equals the released per-image loop."""
    model = standin_model().eval()
    feats = torch.randn(4, model.embed_dim)
    with torch.no_grad():
        batched = model.score_features(feats)
        img = torch.nn.functional.normalize(feats, dim=-1)
        text = model.text_features()
        looped = torch.stack([model.regression(torch.cat([img[i:i + 1], text]).flatten())
                              for i in range(4)]).squeeze(-1)
    assert torch.allclose(batched, looped, atol=1e-6)


def test_frozen_encoders_stay_frozen():
    model = standin_model()
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["prompt_learner.ctx", "regression.1.bias", "regression.1.weight",
                         "regression.4.bias", "regression.4.weight"]
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert not model.clip.training  # frozen parts stay in eval mode
    loss = model(torch.rand(4, 3, 16, 16)).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0
    opt.step()
    after = model.clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fp16_frozen_precision_keeps_trainables_fp32():
    model = standin_model(frozen_precision="bf16")
    assert next(model.clip.parameters()).dtype == torch.bfloat16
    assert model.prompt_learner.ctx.dtype == torch.float32
    model.eval()
    out = model.score_features(torch.randn(2, model.embed_dim))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_config_is_a_user_error():
    with pytest.raises(AgiqaError, match="frozen_precision"):
        ClipAgiqaConfig(frozen_precision="fp8")


def test_trainable_state_round_trip_and_mismatch():
    a, b = standin_model(), standin_model()
    with torch.no_grad():
        a.prompt_learner.ctx.add_(1.0)
    b.load_trainable_state_dict(a.trainable_state_dict())
    assert torch.equal(a.prompt_learner.ctx, b.prompt_learner.ctx)
    with pytest.raises(AgiqaError, match="does not match"):
        standin_model(use_text=False).load_trainable_state_dict(a.trainable_state_dict())


def test_feature_scale_default_is_the_released_head_input():
    """feature_scale 1.0 (the default) feeds the head the unit vectors, bit for bit."""
    model = standin_model().eval()
    assert model.config.feature_scale == 1.0 and ClipAgiqaConfig().feature_scale == 1.0
    feats = torch.randn(5, model.embed_dim)
    with torch.no_grad():
        img = torch.nn.functional.normalize(feats, dim=-1)
        text = model.text_features()
        head_input = torch.cat([img.unsqueeze(1), text.unsqueeze(0).expand(5, -1, -1)], dim=1)
        released = model.regression(head_input.flatten(1)).squeeze(-1)
        assert torch.equal(model.score_features(feats), released)


@pytest.mark.parametrize("use_text", [True, False])
def test_feature_scale_equals_a_scaled_first_head_weight(use_text):
    """In eval mode scale s is the scale-1 model whose first head Linear weight is times s."""
    scale = 22.6
    scaled = standin_model(use_text, feature_scale=scale).eval()
    plain = standin_model(use_text).eval()
    plain.load_trainable_state_dict(scaled.trainable_state_dict())
    with torch.no_grad():
        plain.regression[1].weight.mul_(scale)
    assert scaled.config.feature_scale == scale and plain.config.feature_scale == 1.0
    feats = torch.randn(6, scaled.embed_dim) * 3
    with torch.no_grad():
        got, expected = scaled.score_features(feats), plain.score_features(feats)
        unscaled = standin_model(use_text).eval().score_features(feats)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - unscaled).abs().max() > 1e-2  # the scale reaches the head: the test can fail


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), "2", True, None])
def test_bad_feature_scale_is_a_user_error(scale):
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig

    with pytest.raises(AgiqaError, match="feature_scale"):
        ClipAgiqaConfig(feature_scale=scale)
    if scale is None:  # the study's None is "the recipe's scale"
        assert ClipStudyConfig(feature_scale=scale, recipe="released").feature_scale == 1.0
    else:
        with pytest.raises(AgiqaError, match="feature_scale"):
            ClipStudyConfig(feature_scale=scale)
    assert ClipAgiqaConfig(feature_scale=2).feature_scale == 2.0  # an int is a float scale


# --- binning ---------------------------------------------------------------------------------

def test_quantile_cutpoints_give_equal_bins():
    mos = np.random.default_rng(0).uniform(0, 5, 600)
    cuts = quantile_cutpoints(mos)
    assert cuts.shape == (5,) and np.all(np.diff(cuts) > 0)
    counts = np.bincount(assign_classes(mos, cuts), minlength=6)
    assert counts.min() >= 99 and counts.max() <= 101


def test_assign_classes_follows_released_half_open_bins():
    cuts = RELEASED_CUTPOINTS["agiqa3k"]
    mos = [0.0, 1.2309, 1.231, 2.266, 3.4559, 3.456, 4.9]
    assert assign_classes(mos, cuts).tolist() == [0, 0, 1, 2, 4, 5, 5]
    assert resolve_cutpoints("released", dataset="aigciqa2023").tolist() == [30, 40, 50, 60, 70]


@pytest.mark.parametrize("binning, message", [
    ("released", "fixes cut-points only"), ("deciles", "unknown binning"),
    ((1.0, 2.0, 2.0, 3.0, 4.0), "strictly increasing"), ((1.0, 2.0), "5 strictly"),
])
def test_bad_binning_is_a_user_error(binning, message):
    with pytest.raises(AgiqaError, match=message):
        resolve_cutpoints(binning, train_mos=np.arange(10.0), dataset="demo")


@pytest.mark.real_data
def test_agiqa3k_sextiles_match_released_cutpoints(agiqa3k_root):
    """Under the clip_agiqa split, train sextiles reproduce the released hard-coded cut-points."""
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.data.splits import make_split

    df = load_dataset("agiqa3k", root=agiqa3k_root, check_files=False)
    split = make_split(df, "clip_agiqa")
    train_mos = df.loc[split == "train", "mos"].to_numpy()
    assert len(train_mos) == 2385
    ours = resolve_cutpoints("quantiles", train_mos)
    released = resolve_cutpoints("released", dataset="agiqa3k")
    # The released values are the sextiles rounded to 3 decimals at nearby order statistics.
    np.testing.assert_allclose(ours, released, atol=0.0025)
    agree = assign_classes(train_mos, ours) == assign_classes(train_mos, released)
    assert agree.mean() > 0.99


# --- baselines -------------------------------------------------------------------------------

def test_zero_shot_prefers_images_near_good_photo():
    clip = StandInClip().eval()
    from clip_standin import tokenize

    with torch.no_grad():
        good, bad = clip.encode_text(tokenize(["Good photo.", "Bad photo."]))
    feats = torch.stack([good, bad, 0.5 * good + 0.5 * bad])
    scores = zero_shot_clip_iqa(clip, tokenize, feats)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    assert scores[0] > scores[2] > scores[1]


@pytest.mark.parametrize("probe", [ridge_probe, svr_probe])
def test_probes_learn_a_linear_signal(probe):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    feats = torch.tensor(rng.normal(size=(300, 16)), dtype=torch.float32)
    normed = torch.nn.functional.normalize(feats, dim=-1).numpy()
    mos = normed @ direction * 2 + 2.5
    pred = probe(feats[:240], mos[:240], feats[240:])
    assert pred.shape == (60,)
    assert stats.spearmanr(pred, mos[240:])[0] > 0.9


# --- real CLIP profiles: save / load round trip through `agiqa score` ------------------------

def test_checkpoint_round_trip_through_load_scorer(tmp_path):
    pytest.importorskip("agiqa_lib.backbones.text_tower")
    from PIL import Image

    from agiqa_lib.clip_agiqa.model import create_clip_agiqa, load_scorer, save_checkpoint
    from agiqa_lib.core.checkpoints import read_metadata
    from agiqa_lib.scoring import load_scorer as generic_load_scorer

    torch.manual_seed(0)
    model = create_clip_agiqa("tiny")
    with torch.no_grad():
        model.prompt_learner.ctx.normal_()
        model.regression[4].bias.fill_(2.5)
    path = save_checkpoint(model, tmp_path / "ckpt" / "clip_agiqa_demo_tiny.safetensors")
    meta = read_metadata(path)
    assert meta["agiqa_model"] == "clip_agiqa" and meta["profile"] == "tiny"
    images = [Image.new("RGB", (40, 30), (i * 60, 100, 200 - i * 50)) for i in range(3)]
    model.eval()
    with torch.no_grad():
        batch = torch.stack([model.bundle.preprocess_val(im) for im in images])
        expected = model(batch).numpy()
    for loader in (load_scorer, generic_load_scorer):
        scores = loader(path).score_images(images)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(expected) > 0  # the images get different scores: the test can fail


def test_lite_scorer_encodes_cpu_sized_chunks_with_the_same_scores():
    """On a CPU the scorer encodes 4 images of 224 px at a time (`auto_batch_size`), and each
    score is the one of the whole batch encoded at once."""
    from PIL import Image

    from agiqa_lib.clip_agiqa.model import ClipAgiqaScorer, create_clip_agiqa

    torch.manual_seed(0)
    model = create_clip_agiqa("lite", ClipAgiqaConfig(dropout=0.0)).eval()
    images = [Image.new("RGB", (60 + 9 * i, 50), (i * 40, 100, 200 - i * 25)) for i in range(6)]
    sizes = []
    encode = model.encode_image
    model.encode_image = lambda x: sizes.append(len(x)) or encode(x)
    scores = ClipAgiqaScorer(model).score_images(images)
    assert sizes == [4, 2]
    with torch.no_grad():
        batch = torch.stack([model.bundle.preprocess_val(im) for im in images])
        expected = model.score_features(encode(batch)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert np.ptp(expected) > 0


def test_checkpoint_keeps_the_feature_scale(tmp_path):
    """A checkpoint at scale 22.6 reloads at 22.6 and scores identically; one written before
    the option existed (no feature_scale in its config) loads at the released 1.0."""
    import json

    from agiqa_lib.clip_agiqa.model import (create_clip_agiqa, load_checkpoint, load_scorer,
                                            save_checkpoint)
    from agiqa_lib.core.checkpoints import read_checkpoint, read_metadata, write_checkpoint

    torch.manual_seed(0)
    model = create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6)).eval()
    with torch.no_grad():
        model.prompt_learner.ctx.normal_()
        model.regression[4].bias.fill_(2.5)
    path = save_checkpoint(model, tmp_path / "scaled.safetensors")
    assert json.loads(read_metadata(path)["config"])["feature_scale"] == 22.6
    feats = torch.randn(5, model.embed_dim)
    with torch.no_grad():
        expected = model.score_features(feats)
        reloaded = load_checkpoint(path)
        assert reloaded.config.feature_scale == 22.6
        assert torch.equal(reloaded.score_features(feats), expected)
    from PIL import Image

    images = [Image.new("RGB", (40, 30), (i * 60, 100, 200 - i * 50)) for i in range(3)]
    with torch.no_grad():
        batch = torch.stack([model.bundle.preprocess_val(im) for im in images])
        np.testing.assert_allclose(load_scorer(path).score_images(images), model(batch).numpy(),
                                   rtol=1e-5, atol=1e-6)

    tensors, meta = read_checkpoint(path)  # the same weights, saved by an older version
    config = json.loads(meta["config"])
    del config["feature_scale"]
    old = write_checkpoint(tmp_path / "old.safetensors", tensors,
                           {**meta, "config": json.dumps(config)})
    with torch.no_grad():
        before = load_checkpoint(old)
        assert before.config.feature_scale == 1.0
        model.config.feature_scale = 1.0  # the same model, unscaled
        assert torch.equal(before.score_features(feats), model.score_features(feats))
        assert not torch.allclose(before.score_features(feats), expected)


def test_text_feature_scale_scales_the_text_features_apart():
    """With text_feature_scale u the head reads [s x; u t]; unset, the text features follow
    feature_scale as they did before the option existed."""
    both = standin_model(feature_scale=22.6).eval()
    image_scaled = standin_model(feature_scale=22.6, text_feature_scale=1.0).eval()
    image_scaled.load_trainable_state_dict(both.trainable_state_dict())
    assert both.config.text_feature_scale is None and both.config.text_scale == 22.6
    assert image_scaled.config.text_scale == 1.0
    feats = torch.randn(5, both.embed_dim)
    with torch.no_grad():
        image = torch.nn.functional.normalize(feats, dim=-1) * 22.6
        text = both.text_features()

        def head(text_scale: float) -> torch.Tensor:
            x = torch.cat([image.unsqueeze(1), (text * text_scale).unsqueeze(0).expand(5, -1, -1)],
                          dim=1)
            return both.regression(x.flatten(1)).squeeze(-1)

        assert torch.equal(both.score_features(feats), head(22.6))  # as before the option
        torch.testing.assert_close(image_scaled.score_features(feats), head(1.0))
        assert (head(22.6) - head(1.0)).abs().max() > 1e-3  # the text scale reaches the head
    # unset, training sees the gradients of the model before the option, bit for bit: the
    # one scale multiplies the concatenated input (scaling the parts apart reorders float sums)
    both.train()
    torch.manual_seed(3)
    both.score_features(feats).square().sum().backward()
    grad = both.prompt_learner.ctx.grad.clone()
    both.zero_grad()
    torch.manual_seed(3)
    text = both.text_features()
    x = torch.cat([torch.nn.functional.normalize(feats, dim=-1).unsqueeze(1),
                   text.unsqueeze(0).expand(5, -1, -1)], dim=1).flatten(1) * 22.6
    both.regression(x).squeeze(-1).square().sum().backward()
    assert torch.equal(both.prompt_learner.ctx.grad, grad)
    with pytest.raises(AgiqaError, match="feature_scale"):
        ClipAgiqaConfig(text_feature_scale=0)


def test_checkpoint_keeps_the_text_feature_scale(tmp_path):
    """A checkpoint with a text scale reloads with it and scores identically; a checkpoint
    without one does not write the key (the format older versions read)."""
    import json

    from agiqa_lib.clip_agiqa.model import create_clip_agiqa, load_checkpoint, save_checkpoint
    from agiqa_lib.core.checkpoints import read_metadata

    torch.manual_seed(0)
    model = create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6,
                                                      text_feature_scale=1.0)).eval()
    with torch.no_grad():
        model.prompt_learner.ctx.normal_()
    path = save_checkpoint(model, tmp_path / "text1.safetensors")
    assert json.loads(read_metadata(path)["config"])["text_feature_scale"] == 1.0
    feats = torch.randn(4, model.embed_dim)
    with torch.no_grad():
        reloaded = load_checkpoint(path)
        assert reloaded.config.text_scale == 1.0
        assert torch.equal(reloaded.score_features(feats), model.score_features(feats))
    plain = save_checkpoint(create_clip_agiqa("tiny", ClipAgiqaConfig(feature_scale=22.6)),
                            tmp_path / "plain.safetensors")
    assert "text_feature_scale" not in json.loads(read_metadata(plain)["config"])


@pytest.fixture(params=["tiny", "tiny-full"])
def real_tiny_clip(request, tmp_path):
    """A real open_clip model of each text-tower kind (HF BERT and OpenAI transformer)."""
    from agiqa_lib.backbones.clip import create_clip, save_tiny_full_clip

    if request.param == "tiny":
        return create_clip("tiny")
    return create_clip("full", checkpoint=save_tiny_full_clip(tmp_path / "tiny_full"))


def test_prompt_learner_on_real_text_towers(real_tiny_clip):
    """With the context set to the "X" embeddings, the learned prompts give exactly the text
    features of the placeholder prompts (so insertion and any padding trim are exact)."""
    from agiqa_lib.clip_agiqa.model import create_clip_agiqa

    model = create_clip_agiqa(real_tiny_clip.profile, bundle=real_tiny_clip)
    learner = model.prompt_learner
    assert model.text_features().shape == (6, model.embed_dim)
    ids = model.text_tower.placeholder_prompts(QUALITY_CLASSES, 16)
    with torch.no_grad():
        learner.ctx.copy_(model.text_tower.token_embedding(ids[0, 1:17]))
        expected = torch.nn.functional.normalize(model.clip.encode_text(ids), dim=-1)
        assert torch.allclose(model.text_features(), expected, atol=1e-5)
