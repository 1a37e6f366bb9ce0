"""Checkpoints: versioned, finite, never unpickled, and every damaged one named in one sentence."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib import __version__
from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig
from agiqa_lib.core.checkpoints import (config_from_json, parse_json_field, read_checkpoint,
                                        read_metadata, write_checkpoint)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.tensor_io import save_tensors
from agiqa_lib.ma_agiqa.model import MAAGIQAConfig, create_ma_agiqa, load_model, save_checkpoint
from agiqa_lib.scoring import load_scorer

PICKLE_MESSAGE = "this is a pickled PyTorch file, not safetensors; it is not opened for safety"


@pytest.fixture
def ma_model():
    """A tiny MANIQA-only MA-AGIQA model (random weights; no MLLM needed to score)."""
    torch.manual_seed(0)
    return create_ma_agiqa("tiny", "maniqa", pretrained=False).eval()


def ma_metadata(model) -> dict[str, str]:
    """The metadata save_checkpoint writes for `model`, without the version key."""
    return {"agiqa_model": "ma_agiqa", "profile": "tiny", "variant": "maniqa",
            "config": model.cfg.to_json()}


def ma_tensors(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_checkpoint_records_the_library_version(tmp_path, ma_model):
    path = save_checkpoint(ma_model, tmp_path / "m.safetensors", {"dataset": "demo"})
    meta = read_metadata(path)
    assert meta["agiqa_version"] == __version__ and meta["dataset"] == "demo"
    tensors, meta2 = read_checkpoint(path)
    assert meta2 == meta and set(tensors) == set(ma_model.state_dict())


def test_checkpoint_without_version_key_still_loads_and_scores(tmp_path, ma_model):
    """Files written before agiqa_version existed: same keys, no version; they must load."""
    path = tmp_path / "old.safetensors"
    save_tensors(path, ma_tensors(ma_model), metadata=ma_metadata(ma_model))
    assert "agiqa_version" not in read_metadata(path)
    loaded = load_model(path)
    images = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(loaded(images).score, ma_model(images).score)
    scores = load_scorer(path).score_images([Image.new("RGB", (32, 32), (90, 10, 200))])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_nan_weights_are_refused_when_written(tmp_path):
    tensors = {"ok": torch.ones(3), "head.weight": torch.tensor([1.0, float("nan"), float("inf")])}
    path = tmp_path / "bad.safetensors"
    with pytest.raises(AgiqaError, match=r"refusing to write checkpoint .*bad.safetensors: tensor "
                                         r"'head.weight' holds 2 NaN/inf value\(s\) of 3"):
        write_checkpoint(path, tensors, {})
    assert not path.exists()


def test_nan_weights_are_refused_when_read_naming_tensor_and_version(tmp_path, ma_model):
    tensors = ma_tensors(ma_model)
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[3]
    tensors[name].view(-1)[0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_tensors(path, tensors, metadata={**ma_metadata(ma_model), "agiqa_version": "0.0.9"})
    with pytest.raises(AgiqaError, match=rf"checkpoint .*nan.safetensors \(written by agiqa "
                                         rf"0.0.9\) holds NaN/inf in tensor '{name}' \(1 of "):
        load_scorer(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_pytorch_file_is_not_opened(tmp_path, legacy, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("a pickle was opened"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(AgiqaError, match=PICKLE_MESSAGE):
        load_scorer(path)


def test_plain_pickle_is_recognised(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    with pytest.raises(AgiqaError, match=PICKLE_MESSAGE):
        read_metadata(path)


def test_empty_file_and_folder(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(AgiqaError, match=r"empty.safetensors is empty \(0 bytes\)"):
        read_metadata(tmp_path / "empty.safetensors")
    with pytest.raises(AgiqaError, match=r"is a folder; pass the .safetensors file inside it"):
        load_scorer(tmp_path)


def test_bad_config_json_names_checkpoint_key_and_version(tmp_path, ma_model):
    path = tmp_path / "edited.safetensors"
    meta = {**ma_metadata(ma_model), "config": '{"profile": "tiny",', "agiqa_version": "0.3.0"}
    save_tensors(path, ma_tensors(ma_model), metadata=meta)
    with pytest.raises(AgiqaError, match=r"metadata key 'config' of checkpoint .*edited.safetensors "
                                         r"\(written by agiqa 0.3.0\) is not valid JSON"):
        load_scorer(path)


def test_unknown_config_key_names_key_version_and_known_keys(tmp_path, ma_model):
    raw = json.loads(ma_model.cfg.to_json())
    raw["maniqa"]["rope_theta"] = 10000  # a key a future version might add
    path = tmp_path / "future.safetensors"
    meta = {**ma_metadata(ma_model), "config": json.dumps(raw), "agiqa_version": "2.0.0"}
    save_tensors(path, ma_tensors(ma_model), metadata=meta)
    with pytest.raises(AgiqaError, match=r"checkpoint .*future.safetensors \(written by agiqa "
                                         r"2.0.0\) has unknown ManiqaConfig key\(s\) "
                                         r"\['rope_theta'\] in 'config.maniqa'; agiqa .* knows "
                                         r"\[.*'clean_tablock'.*\]"):
        load_model(path)


def test_missing_required_config_key_in_old_checkpoint(tmp_path, ma_model):
    raw = json.loads(ma_model.cfg.to_json())
    del raw["variant"]
    path = tmp_path / "old.safetensors"
    save_tensors(path, ma_tensors(ma_model), metadata={**ma_metadata(ma_model),
                                                       "config": json.dumps(raw)})
    with pytest.raises(AgiqaError, match=r"\(written by an older version of agiqa \(no "
                                         r"agiqa_version key\)\) lacks MAAGIQAConfig key\(s\) "
                                         r"\['variant'\] in 'config'"):
        load_model(path)


def test_clip_checkpoint_with_unknown_config_key(tmp_path):
    """Checked before any CLIP is built, so this costs no model construction."""
    from agiqa_lib.clip_agiqa.model import load_checkpoint

    config = {**json.loads(json.dumps(ClipAgiqaConfig().__dict__)), "prompt_depth": 9}
    path = tmp_path / "clip.safetensors"
    save_tensors(path, {"regression.1.weight": torch.zeros(1)},
                 metadata={"agiqa_model": "clip_agiqa", "profile": "tiny",
                           "config": json.dumps(config), "agiqa_version": "0.9.0"})
    with pytest.raises(AgiqaError, match=r"\(written by agiqa 0.9.0\) has unknown ClipAgiqaConfig "
                                         r"key\(s\) \['prompt_depth'\] in 'config'; .* knows "
                                         r"\['class_names', "):
        load_checkpoint(path)


def test_config_from_json_fills_defaults_and_converts_tuples():
    """A config written before a defaulted field existed takes the default; lists -> tuples."""
    config = config_from_json(ClipAgiqaConfig, '{"n_ctx": 4, "class_names": ["bad", "good"]}')
    assert config == ClipAgiqaConfig(n_ctx=4, class_names=("bad", "good"))
    ma = MAAGIQAConfig.from_json(
        '{"profile": "tiny", "variant": "maniqa", "fusion": null, "train_backbone": false, '
        '"maniqa": {"grid": 4, "depths": [1, 1]}}')
    assert ma.maniqa.depths == (1, 1) and ma.mllm_model_id is None
    with pytest.raises(AgiqaError, match=r"'config' of the config JSON should be a JSON object"):
        config_from_json(ClipAgiqaConfig, "[1, 2]")


def test_parse_json_field_missing_key_and_default(tmp_path):
    meta = {"agiqa_version": "0.1.0", "extra": "{}"}
    assert parse_json_field(meta, "extra", tmp_path / "c") == {}
    assert parse_json_field(meta, "clip_kwargs", tmp_path / "c", default={"a": 1}) == {"a": 1}
    with pytest.raises(AgiqaError, match=r"checkpoint .*c \(written by agiqa 0.1.0\) has no "
                                         r"metadata key 'config'"):
        parse_json_field(meta, "config", tmp_path / "c")


def test_clip_checkpoint_with_unknown_clip_option(tmp_path):
    from agiqa_lib.clip_agiqa.model import load_checkpoint

    path = tmp_path / "clip.safetensors"
    save_tensors(path, {"regression.1.weight": torch.zeros(1)},
                 metadata={"agiqa_model": "clip_agiqa", "profile": "tiny", "config": "{}",
                           "clip_kwargs": '{"profile": "tiny", "quick_gelu": true}'})
    with pytest.raises(AgiqaError, match=r"\(written by an older version of agiqa .*\) has "
                                         r"'clip_kwargs' \['quick_gelu'\] that this version's "
                                         r"create_clip does not take"):
        load_checkpoint(path)
