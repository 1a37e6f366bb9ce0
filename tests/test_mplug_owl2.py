"""mPLUG-Owl2 on current transformers: checkpoint names, splicing, routing, getFeature pooling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from agiqa_lib.backbones.mllm import (DEFAULT_FULL_MODEL, TINY_MPLUG_OWL2_ID, create_mllm,
                                      tiny_mplug_owl2_dir)
from agiqa_lib.backbones.semantic_encoder import expand2square
from agiqa_lib.backbones.mplug_owl2.config import MPLUGOwl2Config
from agiqa_lib.backbones.mplug_owl2.encoder import MPLUGOwl2SemanticEncoder
from agiqa_lib.backbones.mplug_owl2.loading import is_mplug_owl2, load_mplug_owl2
from agiqa_lib.backbones.mplug_owl2.model import MPLUGOwl2ForCausalLM
from agiqa_lib.backbones.mplug_owl2.processing import (IMAGE_TOKEN_INDEX, MPLUG_OWL2_TEMPLATE,
                                                       question_prompt, tokenizer_image_token)
from agiqa_lib.backbones.mplug_owl2.tiny import build_tiny_mplug_owl2
from agiqa_lib.backbones.mplug_owl2.vision import AbstractorAttention, sincos_1d
from agiqa_lib.core.errors import AgiqaError

KEYS_FILE = Path(__file__).parent / "data" / "mplug_owl2_llama2_7b_keys.txt"
Q_COHERENCE = "Evaluate if the image quality is compromised due to violations of coherence."
Q_SHORT = "Is it sharp?"


def _image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_mplug_owl2(tmp_path_factory.mktemp("owl") / "tiny")


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return create_mllm("full", model_id=tiny_dir)


@pytest.fixture
def model(encoder):
    return encoder.model


# --------------------------------------------------------------------------- checkpoint names


def _released_keys() -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in KEYS_FILE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {name: tuple(int(x) for x in shape.split(",")) for name, shape in rows}


def test_7b_state_dict_is_the_released_checkpoint_key_list():
    released = _released_keys()
    assert len(released) == 862
    with torch.device("meta"):  # the real 7B config, no memory
        model = MPLUGOwl2ForCausalLM(MPLUGOwl2Config())
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert sorted(set(released) - set(ours)) == []  # every hub key has a tensor here
    assert sorted(set(ours) - set(released)) == []  # and nothing else is expected
    assert ours == released  # shapes too
    assert sum(p.numel() for p in model.parameters()) == 8_197_859_328
    assert model.config.n_visual_tokens == 65


def test_the_name_map_is_the_identity_plus_ignored_rope_buffers():
    # The hub files load with their names unchanged; the only extra keys the released
    # converter writes (rotary_emb.inv_freq per layer) are ignored on load.
    patterns = MPLUGOwl2ForCausalLM._keys_to_ignore_on_load_unexpected
    extra = [f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(32)]
    assert all(any(re.search(p, key) for p in patterns) for key in extra)
    assert not any(re.search(p, key) for p in patterns for key in _released_keys())
    assert getattr(MPLUGOwl2ForCausalLM, "_checkpoint_conversion_mapping", {}) == {}


def test_checkpoint_without_position_tables_and_with_inv_freq_loads(tiny_dir, tmp_path):
    folder = tmp_path / "edited"
    folder.mkdir()
    for file in tiny_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    weights = load_file(folder / "model.safetensors")
    dropped = [k for k in weights if k.endswith(("q_pos_embed", "k_pos_embed"))]
    assert len(dropped) == 4  # 2 abstractor layers in the tiny model
    for key in dropped:
        del weights[key]
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    model, info = MPLUGOwl2ForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert info["unexpected_keys"] == set() or not info["unexpected_keys"]
    assert sorted(info["missing_keys"]) == sorted(dropped)
    attention = model.model.visual_abstractor.encoder.layers[1].crossattention.attention
    q_pos, k_pos = AbstractorAttention.position_tables(model.config.abstractor)
    assert torch.equal(attention.q_pos_embed, q_pos) and torch.equal(attention.k_pos_embed, k_pos)


def test_position_tables_follow_the_released_layout():
    table = sincos_1d(8, np.arange(3, dtype=np.float32))
    assert table.shape == (3, 8) and np.allclose(table[0], [0, 0, 0, 0, 1, 1, 1, 1])
    q_pos, k_pos = AbstractorAttention.position_tables(MPLUGOwl2Config().abstractor)
    assert q_pos.shape == (64, 1024) and k_pos.shape == (1025, 1024)
    assert torch.equal(k_pos[0], torch.zeros(1024))  # class token row
    x1_y0 = k_pos[1 + 1]  # grid row-major: token 1 is (x=1, y=0); first half encodes x
    assert torch.allclose(x1_y0[:512], torch.from_numpy(sincos_1d(512, np.array([1.0])))[0])
    assert torch.allclose(x1_y0[512:], torch.from_numpy(sincos_1d(512, np.array([0.0])))[0])


# --------------------------------------------------------------------------- loading path


def test_tiny_folder_round_trips_through_from_pretrained(tiny_dir, encoder, one_torch_thread):
    assert (tiny_dir / "config.json").is_file() and (tiny_dir / "model.safetensors").is_file()
    assert '"model_type": "mplug_owl2"' in (tiny_dir / "config.json").read_text()
    stored = load_file(tiny_dir / "model.safetensors")
    loaded = encoder.model.state_dict()
    assert set(stored) == set(loaded)
    assert all(torch.equal(stored[k], loaded[k]) for k in stored)
    assert encoder.profile == "full" and encoder.model_id == f"local:{tiny_dir.resolve()}"
    assert encoder.dim == 64 and encoder.n_image_tokens == 65


def test_tiny_profile_is_the_full_code_path(encoder, one_torch_thread):
    tiny = create_mllm("tiny")
    assert type(tiny) is MPLUGOwl2SemanticEncoder and tiny.profile == "tiny"
    assert tiny.model_id == TINY_MPLUG_OWL2_ID == "tiny:mplug-owl2-tiny-v1:seed0"
    assert (tiny_mplug_owl2_dir() / "config.json").is_file()
    image = [_image(1)]
    assert torch.equal(tiny.encode(image, Q_SHORT), encoder.encode(image, Q_SHORT))  # same seed


def test_dispatch_by_model_type(tiny_dir, tmp_path):
    from agiqa_lib.backbones.tiny_vlm import build_tiny_vlm

    assert DEFAULT_FULL_MODEL == "MAGAer13/mplug-owl2-llama2-7b"
    assert is_mplug_owl2(tiny_dir) and is_mplug_owl2(DEFAULT_FULL_MODEL)
    assert is_mplug_owl2("q-future/one-align")
    assert not is_mplug_owl2(build_tiny_vlm(tmp_path / "llava"))
    assert not is_mplug_owl2("llava-hf/llava-1.5-7b-hf")


def test_missing_weights_offline_is_the_full_profile_error(no_network):
    with pytest.raises(AgiqaError, match=r"`full` profile needs the mPLUG-Owl2 checkpoint "
                                         r"'MAGAer13/mplug-owl2-llama2-7b'.*hf download.*local "
                                         r"folder"):
        create_mllm("full")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(AgiqaError, match="no config.json"):
        load_mplug_owl2(tmp_path)


def test_quantization_needs_bitsandbytes_and_cuda(monkeypatch, tiny_dir):
    from agiqa_lib.backbones.mplug_owl2 import loading

    with pytest.raises(AgiqaError, match="unknown quantization"):
        load_mplug_owl2(tiny_dir, quantization="3bit")
    real = loading.importlib.util.find_spec
    monkeypatch.setattr(loading.importlib.util, "find_spec",
                        lambda name: None if name == "bitsandbytes" else real(name))
    with pytest.raises(AgiqaError, match=r"needs the packages bitsandbytes.*pip install "
                                         r"bitsandbytes"):
        load_mplug_owl2(tiny_dir, quantization="8bit", device="cuda")
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(AgiqaError, match="needs a CUDA device"):
        load_mplug_owl2(tiny_dir, quantization="4bit", device="cpu")
    with pytest.raises(AgiqaError, match="only used by profile 'full'"):
        create_mllm("tiny", quantization="8bit")


# --------------------------------------------------------------------------- prompts and tokens


class _ChunkTokenizer:
    """Each call returns BOS + one id per character (like a tokenizer that adds BOS)."""

    bos_token_id = 1

    def __call__(self, text):
        class Out:
            input_ids = [1] + [100 + ord(c) for c in text]
        return Out()


def test_prompt_and_tokenizer_image_token_as_released():
    assert question_prompt(Q_COHERENCE) == f"USER: {Q_COHERENCE}\n<|image|> ASSISTANT:"
    assert question_prompt("Q", "before_text") == "USER: <|image|>\nQ ASSISTANT:"
    turns = [("USER", "hi"), ("ASSISTANT", "yo"), ("USER", "q"), ("ASSISTANT", None)]
    assert MPLUG_OWL2_TEMPLATE.render(turns) == "USER: hi ASSISTANT: yo</s>USER: q ASSISTANT:"
    tok, ids = _ChunkTokenizer(), tokenizer_image_token("ab<|image|>c", _ChunkTokenizer())
    assert ids == [1, 100 + ord("a"), 100 + ord("b"), IMAGE_TOKEN_INDEX, 100 + ord("c")]
    # Image first: the empty first piece has no BOS, so the release keeps the next piece's BOS.
    assert tokenizer_image_token("<|image|>c", tok) == [IMAGE_TOKEN_INDEX, 1, 100 + ord("c")]


def test_token_layout_and_describe(encoder, one_torch_thread):
    layout = encoder.token_layout(Q_COHERENCE)
    ids = tokenizer_image_token(question_prompt(Q_COHERENCE), encoder.processor.tokenizer)
    assert ids[0] == encoder.processor.tokenizer.bos_token_id
    assert layout["n_image_tokens"] == 65 and layout["n_text_tokens"] == len(ids) - 1
    assert layout["image_span"] == (ids.index(IMAGE_TOKEN_INDEX),
                                    ids.index(IMAGE_TOKEN_INDEX) + 65)
    assert layout["text_before"][0] == "<s>"
    text = encoder.describe()
    assert "USER: {question}\\n<|image|> ASSISTANT:" in text and "65 image tokens" in text


def test_pixels_are_squared_with_the_mean_colour_and_processed_as_released(encoder):
    assert encoder.pad_colour == (122, 116, 104)  # int(255 * OpenAI CLIP mean)
    image = _image(2, size=(40, 20))
    pixels = encoder.processor.pixel_values([image])
    square = expand2square(image, (122, 116, 104)).resize((28, 28), Image.BICUBIC)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    expected = ((np.asarray(square, dtype=np.float32) / 255 - mean) / std).transpose(2, 0, 1)
    assert pixels.shape == (1, 3, 28, 28)
    assert np.allclose(pixels[0].numpy(), expected, atol=1e-5)


# --------------------------------------------------------------------------- splicing


def test_one_image_becomes_65_visual_tokens(encoder, model, one_torch_thread):
    ids, mask = encoder.processor.encode_prompts([question_prompt(Q_COHERENCE)])
    pixels = encoder.processor.pixel_values([_image(3)])
    features = model.model.encode_images(pixels)
    assert features.shape == (1, 65, 64)  # 64 queries + vit_eos
    out = model(ids, images=pixels, attention_mask=mask, output_hidden_states=True)
    slot = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    assert out.last_hidden_state.shape == (1, ids.shape[1] - 1 + 65, 64)
    assert out.modality_indicators[0].tolist() == [0] * slot + [1] * 65 + [0] * (
        ids.shape[1] - slot - 1)
    assert out.attention_mask.sum() == ids.shape[1] - 1 + 65
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert torch.allclose(out.hidden_states[0][0, slot:slot + 65], features[0])  # spliced in
    assert out.logits.shape == (1, ids.shape[1] - 1 + 65, model.config.vocab_size)


def test_splice_pads_rows_and_checks_image_counts(model, one_torch_thread):
    embed = model.model.embed_tokens
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6, IMAGE_TOKEN_INDEX, 7],
                        [1, IMAGE_TOKEN_INDEX, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    feats = torch.randn(3, 65, 64)
    spliced = model.model.splice(ids, mask, feats)
    assert spliced.inputs_embeds.shape == (2, 4 + 130, 64)
    assert spliced.attention_mask.sum(1).tolist() == [134, 3 + 65]
    assert torch.equal(spliced.inputs_embeds[0, 2:67], feats[0])
    assert torch.equal(spliced.inputs_embeds[0, 68:133], feats[1])
    assert torch.equal(spliced.inputs_embeds[1, 1:66], feats[2])  # images in batch order
    assert torch.equal(spliced.inputs_embeds[1, 66], embed.weight[8])
    assert spliced.modality_indicators.sum(1).tolist() == [130, 65]
    assert spliced.position_ids[1, :68].tolist() == list(range(68))
    with pytest.raises(ValueError, match="3 <|image|> tokens but 2 images"):
        model.model.splice(ids, mask, feats[:2])


# --------------------------------------------------------------------------- modality routing


def _perturb(model, branch: int) -> dict[str, torch.Tensor]:
    saved = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"multiway.{branch}." in name:
                saved[name] = param.detach().clone()
                param.add_(torch.randn_like(param) * 0.5)
    return saved


def _restore(model, saved) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])


def test_multiway_modules_route_each_position_to_its_own_weights(model, one_torch_thread):
    layer = model.model.layers[0]
    x = torch.randn(2, 7, 64)
    modality = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0, 1]])
    for module in (layer.input_layernorm, layer.self_attn.k_proj, layer.self_attn.v_proj):
        before = module(x, modality)
        for branch in (0, 1):
            saved = _perturb(module, branch)
            after = module(x, modality)
            _restore(module, saved)
            mine, other = modality == branch, modality != branch
            assert torch.equal(after[other], before[other])  # untouched branch: identical
            assert not torch.allclose(after[mine], before[mine], atol=1e-3)


def test_visual_weights_never_touch_text_only_inputs(encoder, model, one_torch_thread):
    ids, mask = encoder.processor.encode_prompts(["USER: " + Q_COHERENCE + " ASSISTANT:"])
    pixels = encoder.processor.pixel_values([_image(4)])
    image_ids, image_mask = encoder.processor.encode_prompts([question_prompt(Q_COHERENCE)])
    slot = int((image_ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    with torch.no_grad():
        text = model(ids, attention_mask=mask).last_hidden_state
        mixed = model(image_ids, images=pixels, attention_mask=image_mask).last_hidden_state
        saved = _perturb(model, branch=1)  # the visual branch only
        text_after = model(ids, attention_mask=mask).last_hidden_state
        mixed_after = model(image_ids, images=pixels, attention_mask=image_mask).last_hidden_state
        _restore(model, saved)
    assert torch.equal(text_after, text)  # no image: every position is text
    assert torch.equal(mixed_after[:, :slot], mixed[:, :slot])  # text before the image
    assert not torch.allclose(mixed_after[:, slot:slot + 65], mixed[:, slot:slot + 65], atol=1e-3)


# --------------------------------------------------------------------------- getFeature pooling


def test_vector_is_the_getfeature_mean_of_the_last_normed_states(encoder, model,
                                                                 one_torch_thread):
    image = _image(5, size=(30, 50))
    ids = torch.tensor([tokenizer_image_token(question_prompt(Q_COHERENCE),
                                              encoder.processor.tokenizer)])
    square = expand2square(image.convert("RGB"), encoder.pad_colour)
    pixels = encoder.processor.image_processor(square, return_tensors="pt")["pixel_values"]
    captured = {}
    hook = model.model.norm.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    try:
        with torch.no_grad():  # as getFeature.py:134-136: no mask, mean over dim 1
            states = model(ids, images=pixels, output_hidden_states=True).hidden_states[-1]
    finally:
        hook.remove()
    assert torch.equal(states, captured["o"])  # hidden_states[-1] is after the final norm
    expected = torch.mean(states, dim=1, keepdim=True)[0]  # [1, 64] per image
    assert expected.shape == (1, 64)
    assert torch.allclose(encoder.encode([image], Q_COHERENCE), expected, atol=1e-6)


def test_batches_match_single_images(encoder, one_torch_thread):
    images = [_image(6), _image(7, size=(20, 60)), _image(8)]
    questions = [Q_SHORT, Q_COHERENCE, Q_COHERENCE]  # different lengths: right padding
    batch = encoder.encode(images, questions)
    single = torch.cat([encoder.encode([im], q) for im, q in zip(images, questions)])
    assert torch.allclose(batch, single, atol=1e-5)
    both = encoder.encode_questions(images, [Q_SHORT, Q_COHERENCE])  # one image encoding
    assert both.shape == (3, 2, 64)
    assert torch.allclose(both[:, 1], encoder.encode(images, Q_COHERENCE), atol=1e-5)
    assert not torch.allclose(both[0, 0], both[0, 1], atol=1e-4)  # the question matters
    assert not torch.allclose(both[0, 1], both[2, 1], atol=1e-4)  # the image matters


def test_fp16_and_bf16_load(tiny_dir, one_torch_thread):
    for dtype in (torch.float16, torch.bfloat16):
        model, processor = load_mplug_owl2(tiny_dir, dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {dtype}
        enc = MPLUGOwl2SemanticEncoder(model, processor, profile="full", model_id="x")
        vector = enc.encode([_image(9)], Q_SHORT)
        assert vector.dtype == torch.float32 and torch.isfinite(vector).all()


# --------------------------------------------------------------------------- vision side


def test_vision_attention_splits_the_fused_projection_per_head(model, one_torch_thread):
    attention = model.model.vision_model.encoder.layers[0].self_attn
    x = torch.randn(2, 5, 32)
    heads, width = attention.num_heads, 32
    d = width // heads
    w, b = attention.query_key_value.weight, attention.query_key_value.bias
    outs = []
    for h in range(heads):  # visual_encoder.py:164: per head the 3*d rows are q, k, v
        rows = slice(3 * d * h, 3 * d * (h + 1))
        qkv = x @ w[rows].T + b[rows]  # [B, L, 3d]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        probs = torch.softmax(q @ k.transpose(1, 2) * d ** -0.5, dim=-1)
        outs.append(probs @ v)
    expected = attention.dense(torch.cat(outs, dim=-1))
    with torch.no_grad():
        assert torch.allclose(attention(x), expected, atol=1e-5)


def test_abstractor_layer_matches_the_released_formulas(model, one_torch_thread):
    layer = model.model.visual_abstractor.encoder.layers[0].crossattention
    att, out = layer.attention, layer.output
    queries, image = torch.randn(2, 64, 32), torch.randn(2, 5, 32)
    F = torch.nn.functional
    h = F.layer_norm(queries, (32,), layer.norm1.weight, layer.norm1.bias, 1e-5)  # line 661
    enc = torch.cat([h, F.layer_norm(image, (32,), layer.normk.weight, layer.normk.bias, 1e-5)], 1)
    pos = torch.cat([att.q_pos_embed, att.k_pos_embed]).unsqueeze(0)
    split = lambda t: t.view(2, t.shape[1], 2, 16).permute(0, 2, 1, 3)  # noqa: E731
    q = split(att.query(h + att.q_pos_embed))
    k, v = split(att.key(enc + pos)), split(att.value(enc))  # positions on keys only
    ctx = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v  # head dim 16
    ctx = ctx.permute(0, 2, 1, 3).reshape(2, 64, 32)
    x = h + out.out_proj(ctx)  # lines 607-610: the residual is the normed queries
    mlp = out.mlp
    expected = x + mlp.w2(mlp.ffn_ln(F.silu(mlp.w1(out.norm2(x))) * mlp.w3(out.norm2(x))))
    with torch.no_grad():
        assert torch.allclose(layer(queries, image), expected, atol=1e-5)


def test_eager_and_sdpa_attention_agree(tiny_dir, encoder, one_torch_thread):
    model, processor = load_mplug_owl2(tiny_dir, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa"
    assert encoder.model.config._attn_implementation == "eager"  # the default, as released
    sdpa = MPLUGOwl2SemanticEncoder(model, processor, profile="full", model_id="x")
    images, questions = [_image(10), _image(11)], [Q_SHORT, Q_COHERENCE]
    assert torch.allclose(sdpa.encode(images, questions), encoder.encode(images, questions),
                          atol=1e-5)


def test_a_tokenizer_that_does_not_fit_is_refused(monkeypatch):
    from agiqa_lib.backbones.mplug_owl2 import loading

    class Small:
        bos_token_id = 1

        def __len__(self):
            return 100

    monkeypatch.setattr(loading, "_installed", lambda name: False)
    with pytest.raises(AgiqaError, match=r"100 tokens .* model has 32000.*pip install "
                                         r"sentencepiece protobuf"):
        loading.check_tokenizer(Small(), 32000, "hub/x")
    loading.check_tokenizer(Small(), 100, "hub/x")  # fits


def test_pieces_are_read_as_sentencepiece_did_in_the_release(encoder):
    # transformers 4.31's slow LlamaTokenizer (the release) prefixes "▁" to every piece, even
    # one starting with a space: " ASSISTANT:" -> "▁▁ASSISTANT:" (one token more than a
    # Metaspace pre-tokenizer gives). The tiny tokenizer is converted like the hub's.
    tokenizer = encoder.processor.tokenizer
    backend = tokenizer.backend_tokenizer
    assert backend.pre_tokenizer is None
    assert backend.normalizer.normalize_str(" ASSISTANT:") == "▁▁ASSISTANT:"
    for piece in (" ASSISTANT:", "USER: Is it sharp?\n", "\nASSISTANT: The quality is"):
        ids = tokenizer(piece).input_ids[1:]  # after BOS
        text = "".join(tokenizer.convert_ids_to_tokens(ids))
        text = text.replace("<0x0A>", "\n")  # byte fallback of the newline
        assert text == "▁" + piece.replace(" ", "▁"), (piece, text)
