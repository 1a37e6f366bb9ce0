"""The side MA-AGIQA's IQA backbone reads images at: 224 as released, the dataset's own side for lite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib.backbones.iqa_backbone import (check_image_size, create_iqa_backbone,
                                              dataset_image_size)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.model import (MAAGIQA, MAAGIQAConfig, MAAGIQAScorer, load_model,
                                      ma_agiqa_config, save_checkpoint)


def _images(folder, sizes):
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"{i}.png"
        Image.new("RGB", size, (10 * i, 80, 160)).save(path)
        paths.append(str(path))
    return paths


def _dir(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_dataset_side_is_the_median_shorter_side_rounded_to_32_within_224_and_largest(tmp_path):
    assert dataset_image_size(_images(_dir(tmp_path, "a"), [(256, 256)] * 3), 512) == 256
    odd = _images(_dir(tmp_path, "b"), [(800, 600), (700, 590), (300, 100)])  # median side 590
    assert dataset_image_size(odd, 512) == 512
    assert dataset_image_size(odd, 1024) == 576
    assert dataset_image_size(_images(_dir(tmp_path, "c"), [(100, 90)]), 512) == 224
    # the released size needs no image at all
    assert dataset_image_size([str(tmp_path / "missing.png")], 224) == 224


def test_unreadable_image_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(AgiqaError, match="cannot read image .*bad.png"):
        dataset_image_size([str(bad)], 512)


def test_profiles_say_which_sides_their_backbones_read():
    assert get_profile("full").ma_max_image_size == 224
    assert get_profile("lite").ma_max_image_size == 512
    assert check_image_size("lite", 512) == 512
    for profile, size in (("full", 512), ("tiny", 256), ("lite", 500), ("lite", 1056),
                          ("lite", 192)):
        with pytest.raises(AgiqaError):
            check_image_size(profile, size)
    with pytest.raises(AgiqaError, match="fixed position embeddings"):
        MAStudyConfig(dataset="demo", profile="full", image_size=512)
    assert MAStudyConfig(dataset="demo", profile="lite", image_size=320).image_size == 320


def test_lite_backbone_reads_512_px_onto_the_same_28_x_28_grid():
    backbone = create_iqa_backbone("lite", pretrained=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8))
    x = backbone.transform(False, size=512)(image)
    assert x.shape == (3, 512, 512)
    assert "size=(512, 512)" in repr(backbone.transform(False, size=512))  # in the cache key
    with torch.no_grad():
        tokens = backbone(x[None])
        small = backbone(backbone.transform(False)(image)[None])
    assert tokens.shape == small.shape == (1, 512, 784)
    assert not torch.allclose(tokens, small)


def test_checkpoint_keeps_the_image_size_and_the_scorer_reads_at_it(tmp_path):
    backbone = create_iqa_backbone("lite", pretrained=False)
    cfg = ma_agiqa_config("lite", "maniqa", backbone.out_channels, image_size=256)
    path = save_checkpoint(MAAGIQA(cfg, backbone), tmp_path / "m.safetensors")
    model = load_model(path)
    assert model.cfg.image_size == 256
    scorer = MAAGIQAScorer(model)
    assert scorer.transform(Image.new("RGB", (40, 30))).shape == (3, 256, 256)
    assert np.isfinite(scorer.score_images([Image.new("RGB", (300, 200), (5, 90, 30))])).all()
    # a checkpoint written before the field existed was trained at the released 224
    old = {k: v for k, v in json.loads(cfg.to_json()).items() if k != "image_size"}
    assert MAAGIQAConfig.from_json(json.dumps(old)).image_size == 224


def test_scorer_runs_the_backbone_in_cpu_sized_chunks_with_the_same_scores():
    """On a CPU the scorer feeds the backbone a few images of its side at a time (1 at 512 px,
    4 at 224-256) while the MLLM keeps its batch: each image's score is the one it gets alone."""
    from agiqa_lib.backbones.mllm import create_mllm

    torch.manual_seed(0)
    backbone = create_iqa_backbone("tiny", pretrained=False)
    encoder = create_mllm("tiny")
    cfg = ma_agiqa_config("tiny", "released_gate", backbone.out_channels,
                          semantic_dim=encoder.dim)  # 224 px: chunks of 4 on a CPU
    scorer = MAAGIQAScorer(MAAGIQA(cfg, backbone), encoder, batch_size=6)
    calls = []
    forward = scorer.model.forward
    scorer.model.forward = lambda x, s: calls.append(len(x)) or forward(x, s)
    images = [Image.new("RGB", (64 + 8 * i, 48), (30 * i, 200 - 20 * i, 90)) for i in range(7)]
    together = scorer.score_images(images)
    assert calls == [4, 2, 1]  # batches of 6 and 1 for the MLLM, chunks of 4 for the backbone
    alone = np.concatenate([scorer.score_images([image]) for image in images])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_prepared_lite_data_reads_the_demo_at_its_own_256_px(tmp_path):
    from agiqa_lib.ma_agiqa.data import prepare_data
    from agiqa_lib.ma_agiqa.study import run_dir

    base = dict(dataset="demo", profile="lite", variants=("maniqa",), limit=16, progress=False,
                out_dir=str(tmp_path))
    auto = prepare_data(MAStudyConfig(**base))
    released = prepare_data(MAStudyConfig(**base, image_size=224))
    assert (auto.image_size, released.image_size) == (256, 224)
    assert auto.tokens.shape == released.tokens.shape
    assert not torch.equal(auto.tokens, released.tokens)  # two cache entries, not one
    cfg = MAStudyConfig(**base)
    assert run_dir(cfg, "maniqa", 20, 256).name.endswith("_256px")
    assert run_dir(cfg, "maniqa", 20, 224).name == "maniqa_seed20_as_released"
