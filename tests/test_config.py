"""Study configs (one frozen dataclass per study), the profile table and device handling."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.core.config import resolve_device
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import PROFILE_NAMES, PROFILES, get_profile
from agiqa_lib.data.splits import evenly_spread
from agiqa_lib.ma_agiqa.config import MAStudyConfig, train_config
from agiqa_lib.ma_agiqa.model import ma_agiqa_config


def test_configs_are_frozen_and_built_from_a_notebook_namespace():
    namespace = {"dataset": "agiqa3k", "variants": ["maniqa", "softmax_gate"], "seeds": [1, 2],
                 "fast": False, "pd": object(), "unrelated": 3}
    cfg = MAStudyConfig.from_mapping(namespace)
    assert cfg.variants == ("maniqa", "softmax_gate") and cfg.seeds == (1, 2)
    assert cfg.protocol == "ma_agiqa" and cfg.needs_semantic
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.profile = "full"
    assert cfg.replace(profile="tiny").profile == "tiny"


def test_fast_shrinks_every_schedule_and_bad_values_are_one_sentence():
    clip = ClipStudyConfig(fast=True, epochs=100, n_aug_views=8)
    assert (clip.limit, clip.epochs, clip.n_aug_views, clip.n_boot) == (96, 2, 1, 100)
    ma = MAStudyConfig(fast=True)
    assert (ma.limit, ma.epochs) == (96, 2)
    assert MAStudyConfig(fast=True, limit=40).limit == 40 and ClipStudyConfig().limit is None
    for bad in (dict(profile="huge"), dict(precision="fp8"), dict(device="gpu"),
                dict(n_boot=0), dict(variants=("gated",)), dict(seeds=()),
                dict(flip="diagonal"), dict(limit=0)):
        with pytest.raises(AgiqaError):
            MAStudyConfig(**bad)
    with pytest.raises(AgiqaError, match="limit must be a positive"):
        ClipStudyConfig(limit=0)


def test_a_limit_keeps_rows_evenly_spread_over_the_file():
    df = pd.DataFrame({"name": [f"{i}.png" for i in range(10)],
                       "generator": ["a"] * 5 + ["b"] * 5})
    kept = evenly_spread(df, 4)
    assert list(kept["name"]) == ["0.png", "3.png", "6.png", "9.png"]  # both generators
    assert list(kept.index) == [0, 1, 2, 3]
    assert evenly_spread(df, None).equals(df) and evenly_spread(df, 50).equals(df)


def test_devices_resolve_or_say_what_to_pass():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available()
                                                          else "cpu")
    assert resolve_device("auto").type == expected
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(AgiqaError, match=f"has {count} usable CUDA"):
        resolve_device(f"cuda:{count}")
    with pytest.raises(AgiqaError, match="cuda:N"):
        resolve_device("tpu")


def test_one_profile_table_drives_architecture_and_training():
    assert PROFILE_NAMES == ("full", "lite", "tiny")
    with pytest.raises(AgiqaError, match="full, lite, tiny"):
        get_profile("medium")
    for name, profile in PROFILES.items():
        cfg = ma_agiqa_config(name, "released_gate", in_channels=64)
        assert cfg.fusion.semantic_dim == profile.semantic_dim
        assert cfg.train_backbone == profile.train_iqa_backbone
        assert all(getattr(cfg.maniqa, k) == v for k, v in profile.maniqa.items())
        train = train_config(name)
        assert all(getattr(train, k) == v for k, v in profile.ma_training.items())
    assert train_config("full").lr == 1e-5 and train_config("full").epochs == 30  # as released


def test_scorer_checkpoints_of_two_splits_in_one_folder_have_their_own_names(tmp_path,
                                                                               monkeypatch):
    """A run on another split than the study's own (`run_all.sh --also-protocol`) saves its
    scorer checkpoint under a name of its own, and the own split keeps the released names."""
    from types import SimpleNamespace

    from agiqa_lib.clip_agiqa import study as clip_study
    from agiqa_lib.ma_agiqa import study as ma_study

    clip = {p: ClipStudyConfig(protocol=p, out_dir=str(tmp_path), feature_scale=22.6,
                               recipe="released")
            for p in ("clip_agiqa", "prompt_disjoint")}
    assert clip["clip_agiqa"].protocol_tag == ""
    assert clip_study.checkpoint_path(clip["clip_agiqa"]).name == \
        "clip_agiqa_demo_lite_scale22.6.safetensors"
    assert clip_study.checkpoint_path(clip["prompt_disjoint"]).name == \
        "clip_agiqa_demo_lite_prompt_disjoint_scale22.6.safetensors"

    saved = {}

    def fake_save(model, path, metadata):  # the name is what is tested, not the writer
        saved[path.name] = metadata["protocol"]
        return path

    run = SimpleNamespace(variant="released_gate", seed=20, best_epoch=1, selection="last",
                          model=torch.nn.Linear(1, 1), metrics={"all_test": {"srcc": 0.5}})
    result = SimpleNamespace(runs=[run], run=lambda variant: run,
                             data=SimpleNamespace(mllm_is_stand_in=True))
    monkeypatch.setattr(ma_study, "save_checkpoint", fake_save)
    for protocol in ("ma_agiqa", "prompt_disjoint"):
        ma_study.save_scorer_checkpoint(result, MAStudyConfig(protocol=protocol,
                                                              out_dir=str(tmp_path)))
    assert saved == {"ma_agiqa_demo_lite.safetensors": "ma_agiqa",
                     "ma_agiqa_demo_lite_prompt_disjoint.safetensors": "prompt_disjoint"}
