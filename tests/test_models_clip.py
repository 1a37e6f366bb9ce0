"""CLIP profiles: builds, shapes, frozen weights, preprocessing, the text tower, `full`'s loader."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage.data import astronaut, chelsea
from torchvision.transforms import RandomHorizontalFlip, RandomResizedCrop

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import write_json
from agiqa_lib.backbones import weights
from agiqa_lib.backbones.clip import TINY_FULL_CONFIG, ClipBundle, create_clip, save_tiny_full_clip
from agiqa_lib.backbones.text_tower import TextTower

CLASS_NAMES = ["terrible", "bad", "poor", "average", "good", "perfect"]


@pytest.fixture(scope="module")
def tiny_full_dir(tmp_path_factory):
    return save_tiny_full_clip(tmp_path_factory.mktemp("tiny-full") / "clip")


@pytest.fixture(scope="module")
def bundles(tiny_full_dir):
    """One bundle per text-tower family: tiny (HF), lite (HF, real weights), tiny full (OpenAI)."""
    return {"tiny": create_clip("tiny"), "lite": create_clip("lite"),
            "full": create_clip("full", checkpoint=tiny_full_dir)}


def _image(width=96, height=80):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("profile", ["tiny", "lite", "full"])
def test_every_profile_gives_frozen_model_and_documented_shapes(bundles, profile):
    bundle = bundles[profile]
    assert isinstance(bundle, ClipBundle)
    model = bundle.model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    image = _image()
    batch = torch.stack([bundle.preprocess_val(image), bundle.preprocess_train(image)])
    assert batch.shape == (2, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        image_features = model.encode_image(batch)
        text_features = model.encode_text(bundle.tokenizer(["a photo of a cat", "good"]))
    assert image_features.shape == (2, bundle.embed_dim)
    assert text_features.shape == (2, bundle.embed_dim)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


def test_profile_specific_facts(bundles):
    lite, tiny, full = bundles["lite"], bundles["tiny"], bundles["full"]
    assert (lite.embed_dim, lite.image_size) == (512, 224)
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert isinstance(lite.model, open_clip.CustomTextCLIP)
    assert isinstance(tiny.model, open_clip.CustomTextCLIP) and tiny.embed_dim == 32
    assert isinstance(full.model, open_clip.CLIP)
    assert full.embed_dim == TINY_FULL_CONFIG["embed_dim"]
    assert full.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert lite.model_id.startswith("lite:effnet-lite0+minilm-l6:")
    assert full.model_id.startswith("open_clip:local-dir:sha256-")
    assert all(b.interpolation == "bicubic" for b in (lite, tiny, full))


def test_lite_towers_hold_the_packaged_weights(bundles):
    model = bundles["lite"].model
    packaged = weights.lite0_state_dict()
    for name, tensor in model.visual.trunk.state_dict().items():
        assert torch.equal(tensor, packaged[name]), name
    minilm = load_file(str(weights.minilm_path() / "model.safetensors"))
    text_state = model.text.transformer.state_dict()
    for name, tensor in text_state.items():
        source = minilm.get(name, minilm.get(f"bert.{name}"))
        if source is not None:
            assert torch.equal(tensor, source), name
    assert torch.equal(text_state["embeddings.word_embeddings.weight"],
                       minilm["embeddings.word_embeddings.weight"])


def test_lite_image_features_are_pretrained_not_random(bundles):
    """A flipped photo stays close to itself and far from another photo (random weights would
    not separate them), so the ImageNet features survive the random projection."""
    bundle = bundles["lite"]
    cat = Image.fromarray(chelsea())
    images = [cat, cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.fromarray(astronaut())]
    with torch.no_grad():
        features = bundle.model.encode_image(torch.stack([bundle.preprocess_val(im)
                                                          for im in images]))
    features = torch.nn.functional.normalize(features, dim=-1)
    same, other = float(features[0] @ features[1]), float(features[0] @ features[2])
    assert same > 0.9 and other < 0.6, (same, other)


def test_model_ids_are_stable_and_follow_precision(bundles):
    again = create_clip("tiny")
    assert again.model_id == bundles["tiny"].model_id
    half = create_clip("tiny", precision="bf16")
    assert half.dtype == torch.bfloat16
    assert half.model_id == bundles["tiny"].model_id + ":bf16"


def test_train_transform_is_random_resized_crop_and_flip_val_is_deterministic(bundles):
    bundle = bundles["lite"]
    steps = bundle.preprocess_train.transforms
    crop = next(t for t in steps if isinstance(t, RandomResizedCrop))
    assert crop.scale == (0.08, 1.0) and crop.size == (224, 224)
    assert any(isinstance(t, RandomHorizontalFlip) for t in steps)
    image = _image(300, 200)
    assert torch.equal(bundle.preprocess_val(image), bundle.preprocess_val(image))


@pytest.mark.parametrize("profile", ["tiny", "lite", "full"])
def test_text_tower_without_context_equals_encode_text(bundles, profile):
    bundle = bundles[profile]
    tower = TextTower(bundle.model)  # tokenizer derived from the model
    ids = tower.placeholder_prompts(CLASS_NAMES, n_ctx=16)
    prompts = [" ".join(["X"] * 16 + [f"{name}."]) for name in CLASS_NAMES]
    assert torch.equal(ids, bundle.tokenizer(prompts))
    with torch.no_grad():
        ours = tower.encode_with_embeddings(tower.token_embedding(ids), ids)
        reference = bundle.model.encode_text(ids)
    assert ours.shape == (len(CLASS_NAMES), bundle.embed_dim)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("profile", ["tiny", "lite", "full"])
def test_trimmed_prompts_give_the_same_features_with_context(bundles, profile):
    """Cutting the prompts after the last real token is exact for the causal EOT-pooled
    (OpenAI) tower and the padding-masked (HF) one, context vectors included."""
    tower = TextTower(bundles[profile].model)
    ids = tower.placeholder_prompts(CLASS_NAMES, n_ctx=16)
    short = tower.trimmed(ids)
    assert short.shape[1] < ids.shape[1] and torch.equal(short, ids[:, :short.shape[1]])
    assert (ids[:, short.shape[1]:] == ids[0, -1]).all()  # only padding was cut
    context = torch.randn(16, tower.width, generator=torch.Generator().manual_seed(0)) * 0.02
    with torch.no_grad():
        full = tower.encode_with_embeddings(
            tower.insert_context(tower.token_embedding(ids), context), ids)
        cut = tower.encode_with_embeddings(
            tower.insert_context(tower.token_embedding(short), context), short)
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("profile", ["tiny", "full"])
def test_context_vectors_change_features_and_receive_gradients(bundles, profile):
    bundle = bundles[profile]
    tower = TextTower(bundle.model, bundle.tokenizer)
    ids = tower.placeholder_prompts(CLASS_NAMES[:2], n_ctx=4)
    context = (torch.randn(4, tower.width) * 0.02).requires_grad_(True)
    embeds = tower.insert_context(tower.token_embedding(ids), context)
    assert embeds.shape == (2, ids.shape[1], tower.width)
    features = tower.encode_with_embeddings(embeds, ids)
    with torch.no_grad():
        plain = tower.encode_with_embeddings(tower.token_embedding(ids), ids)
    assert not torch.allclose(features, plain)
    features.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0
    assert all(p.grad is None for p in bundle.model.parameters())


def test_tiny_full_checkpoint_round_trips_through_full_loader(bundles, tiny_full_dir, tmp_path):
    saved = load_file(str(tiny_full_dir / "open_clip_model.safetensors"))
    loaded = bundles["full"].model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    # The same weights as a bare state-dict file for a registered arch name.
    write_json(tmp_path / "agiqa-tiny-vit.json", TINY_FULL_CONFIG)
    open_clip.add_model_config(tmp_path / "agiqa-tiny-vit.json")
    from_file = create_clip("full", arch="agiqa-tiny-vit",
                            checkpoint=tiny_full_dir / "open_clip_model.safetensors")
    assert from_file.model_id.startswith("open_clip:agiqa-tiny-vit:sha256-")
    ids = from_file.tokenizer(["a photo"])
    with torch.no_grad():
        torch.testing.assert_close(from_file.model.encode_text(ids),
                                   bundles["full"].model.encode_text(ids))


def test_offline_full_without_weights_is_one_clear_error(no_network):
    with pytest.raises(AgiqaError) as info:
        create_clip("full", arch="ViT-B-16", pretrained="openai")
    message = str(info.value)
    assert "'ViT-B-16'" in message and "'openai'" in message
    assert "checkpoint=PATH" in message and "internet" in message


@pytest.mark.parametrize("kwargs, match", [
    (dict(profile="huge"), "unknown profile"),
    (dict(profile="tiny", precision="fp8"), "unknown precision"),
    (dict(profile="lite", checkpoint="x.pt"), "profile 'full' only"),
    (dict(profile="full", arch="ViT-Z-99"), "no architecture"),
    (dict(profile="full", pretrained="nonexistent"), "no pretrained tag"),
    (dict(profile="full", checkpoint="/nonexistent/clip.pt"), "does not exist"),
])
def test_bad_options_are_agiqa_errors(kwargs, match, no_network):
    with pytest.raises(AgiqaError, match=match):
        create_clip(**kwargs)


def test_corrupt_checkpoint_is_an_agiqa_error(tmp_path, no_network):
    folder = tmp_path / "broken"
    save_tiny_full_clip(folder)
    (folder / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AgiqaError, match="could not load checkpoint"):
        create_clip("full", checkpoint=folder)
