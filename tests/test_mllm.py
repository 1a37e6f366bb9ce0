"""Semantic encoders: the full loading path (via a tiny random LLaVA), pooling, prompts, lite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.backbones.lite_semantic import LiteSemanticEncoder, LiteStandInConfig
from agiqa_lib.backbones.mllm import (DEFAULT_FULL_MODEL, HFSemanticEncoder, build_prompt,
                                      create_mllm, tiny_mplug_owl2_dir)
from agiqa_lib.backbones.semantic_encoder import expand2square, masked_mean
from agiqa_lib.backbones.tiny_vlm import build_tiny_vlm

Q_SHORT = "Is it sharp?"
Q_LONG = "Evaluate if the image quality is compromised due to violations of coherence."


def _image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return create_mllm("full", model_id=tiny_dir)


@pytest.fixture(scope="module")
def lite():
    return create_mllm("lite")


def test_full_path_loads_a_local_folder(tiny, tiny_dir):
    assert tiny.profile == "full" and not tiny.is_stand_in
    assert tiny.dim == 64
    assert tiny.model_id == f"local:{tiny_dir.resolve()}"
    vectors = tiny.encode([_image(0), _image(1)], Q_LONG)
    assert vectors.shape == (2, 64) and vectors.dtype == torch.float32
    assert torch.isfinite(vectors).all()


def test_tiny_profile_is_the_full_code_path(tiny, tmp_path):
    # `tiny` is now a tiny mPLUG-Owl2 (the default `full` MLLM, see test_mplug_owl2.py); the
    # tiny LLaVA of this file still goes through the generic transformers path as `full`.
    encoder = create_mllm("tiny")
    assert encoder.profile == "tiny" and encoder.model_id == "tiny:mplug-owl2-tiny-v1:seed0"
    assert type(encoder).__name__ == "MPLUGOwl2SemanticEncoder"
    assert type(tiny) is HFSemanticEncoder
    again = create_mllm("full", model_id=build_tiny_vlm(tmp_path / "again"))  # same seed
    images = [_image(2)]
    assert torch.allclose(again.encode(images, Q_SHORT), tiny.encode(images, Q_SHORT), atol=1e-6)
    assert (tiny_mplug_owl2_dir() / "config.json").is_file()


def test_pooling_is_the_masked_mean_of_the_final_normed_hidden_states(tiny):
    image = _image(3)
    prompt = tiny.build_prompt(Q_LONG)
    square = expand2square(image, tiny.pad_colour)
    inputs = tiny.processor(text=[prompt], images=[square], return_tensors="pt")
    captured = {}
    norm = tiny.model.model.language_model.norm
    handle = norm.register_forward_hook(lambda m, i, o: captured.setdefault("normed", o))
    try:
        with torch.no_grad():
            out = tiny.model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    assert torch.equal(out.hidden_states[-1], captured["normed"])
    n_image_tokens = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert n_image_tokens == 16  # 32 px / patch 8: all image tokens are pooled too
    expected = captured["normed"][0].mean(dim=0)  # every position, text and image
    assert torch.allclose(tiny.encode([image], Q_LONG)[0], expected, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batches_with_padding_match_single_images(tiny, side):
    tokenizer = tiny.processor.tokenizer
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        images = [_image(4), _image(5, size=(30, 60))]
        batch = tiny.encode(images, [Q_SHORT, Q_LONG])
        single = torch.cat([tiny.encode(images[:1], Q_SHORT), tiny.encode(images[1:], Q_LONG)])
    finally:
        tokenizer.padding_side = old
    assert torch.allclose(batch, single, atol=1e-5)


def test_vectors_depend_on_image_and_question(tiny):
    a, b = _image(6), _image(7)
    va, vb = tiny.encode([a], Q_LONG), tiny.encode([b], Q_LONG)
    assert not torch.allclose(va, vb, atol=1e-4)
    assert not torch.allclose(va, tiny.encode([a], Q_SHORT), atol=1e-4)


def test_prompt_places_the_image_as_asked(tiny):
    # LLaVA-1.5's template renders images first; after_text must still put it after the text,
    # giving the released mPLUG-Owl2 prompt shape "USER: {q}\n<image> ASSISTANT:".
    after = build_prompt(tiny.processor, Q_LONG, "after_text")
    before = build_prompt(tiny.processor, Q_LONG, "before_text")
    assert after == f"USER: {Q_LONG}\n<image> ASSISTANT:"
    assert before == f"USER: <image>\n{Q_LONG} ASSISTANT:"


def test_prompt_keeps_an_order_respecting_template(tiny_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    processor.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}[<image>]{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert build_prompt(processor, "Q?", "after_text") == "<|user|>Q?[<image>]<|assistant|>"
    assert build_prompt(processor, "Q?", "before_text") == "<|user|>[<image>]Q?<|assistant|>"


def test_expand2square_pads_centred_with_the_mean_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand2square(image, (122, 116, 104))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (122, 116, 104)
    assert square.getpixel((20, 20)) == (255, 0, 0)
    assert square.getpixel((20, 9)) == (122, 116, 104) and square.getpixel((20, 10)) == (255, 0, 0)


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[100.0], [2.0], [4.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert masked_mean(hidden, mask).flatten().tolist() == [2.0, 3.0]


def test_missing_full_weights_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AgiqaError, match="download .*local folder"):
        create_mllm("full", model_id="nobody/not-a-cached-model-7b")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(AgiqaError, match="no config.json"):
        create_mllm("full", model_id=tmp_path)


def test_bad_options_are_clear_errors():
    with pytest.raises(AgiqaError, match="unknown profile"):
        create_mllm("huge")
    with pytest.raises(AgiqaError, match="image_placement"):
        create_mllm("lite", image_placement="middle")
    with pytest.raises(AgiqaError, match="only used by profile 'full'"):
        create_mllm("lite", model_id=DEFAULT_FULL_MODEL)


def test_lite_stand_in(lite):
    assert lite.is_stand_in and lite.profile == "lite" and lite.dim == 384
    assert lite.model_id.startswith("lite:")
    images = [_image(8), _image(9, size=(64, 32))]
    batch = lite.encode(images, [Q_SHORT, Q_LONG])  # padded to the longer question
    assert batch.shape == (2, 384)
    single = torch.cat([lite.encode(images[:1], Q_SHORT), lite.encode(images[1:], Q_LONG)])
    assert torch.allclose(batch, single, atol=1e-5)
    assert not torch.allclose(single[1], lite.encode(images[:1], Q_LONG)[0], atol=1e-4)  # img
    assert not torch.allclose(single[1], lite.encode(images[1:], Q_SHORT)[0], atol=1e-4)  # q
    both = lite.encode_questions(images, [Q_SHORT, Q_LONG])  # features shared by the questions
    assert both.shape == (2, 2, 384)
    assert torch.allclose(both[:, 1], lite.encode(images, Q_LONG), atol=1e-5)
    pixels = torch.stack([lite.preprocess(im) for im in images])
    tokens = lite.tokenizer([Q_LONG] * 2, padding=True, return_tensors="pt")
    with torch.no_grad():
        forward = lite(pixels, tokens["input_ids"], tokens["attention_mask"])
    assert torch.allclose(forward, both[:, 1], atol=1e-5)


def test_lite_is_deterministic_and_placement_matters(lite):
    # Same packaged parts, rebuilt: the image-token projection comes from a fixed seed.
    parts = (lite.image_trunk, lite.text_model, lite.tokenizer, lite.config)
    again = LiteSemanticEncoder(*parts, image_placement="after_text")
    assert torch.equal(again.project.weight, lite.project.weight)
    before = LiteSemanticEncoder(*parts, image_placement="before_text")
    image = [_image(10)]
    assert not torch.allclose(lite.encode(image, Q_LONG), before.encode(image, Q_LONG), atol=1e-4)
    other_seed = LiteSemanticEncoder(*parts[:3], LiteStandInConfig(seed=1))
    assert other_seed.model_id != lite.model_id


@pytest.mark.parametrize("placement, same", [("before_text", True), ("after_text", False)])
def test_image_tokens_see_the_question_only_when_placed_after_it(tiny_dir, placement, same):
    # Why placement matters in a causal model (notebook 03, section 2).
    encoder = create_mllm("full", model_id=tiny_dir, image_placement=placement)
    square = expand2square(_image(11), encoder.pad_colour)
    states = []
    for question in (Q_SHORT, Q_LONG):
        inputs = encoder.processor(text=[encoder.build_prompt(question)], images=[square],
                                   return_tensors="pt")
        with torch.no_grad():
            hidden = encoder.model(**inputs, output_hidden_states=True).hidden_states[-1]
        states.append(hidden[0, inputs["input_ids"][0] == encoder.model.config.image_token_id])
    assert torch.allclose(states[0], states[1], atol=1e-5) == same
