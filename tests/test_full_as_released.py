"""`full` as the papers' code ran it: profile defaults, CLIP-AGIQA's fresh views every epoch and
fp16 as released, MA-AGIQA's OpenCV preprocessing and as-released validation, the semantic
source option and the config checks around them."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agiqa_lib.backbones.clip import create_clip, save_tiny_full_clip
from agiqa_lib.backbones.iqa_backbone import ReleasedCv2Transform, create_iqa_backbone
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.clip_agiqa.batches import ImageBatches
from agiqa_lib.clip_agiqa.model import (ClipAgiqaConfig, create_clip_agiqa, load_checkpoint,
                                        save_checkpoint)
from agiqa_lib.clip_agiqa.train import (EvalSet, FreshViews, TrainConfig, fit_selection_rules,
                                        train_clip_agiqa)
from agiqa_lib.core.checkpoints import read_metadata
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import PROFILE_NAMES, get_profile
from agiqa_lib.ma_agiqa.config import MAStudyConfig, train_config
from agiqa_lib.ma_agiqa.data import MAItems, PreparedData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- configs


def test_profile_table_sets_the_released_defaults_for_full():
    full, lite, tiny = (get_profile(name) for name in PROFILE_NAMES)
    assert (full.clip_augmentation, full.clip_precision_cuda, full.ma_resize) == \
        ("fresh", "fp16_as_released", "released_cv2")
    for profile in (lite, tiny):
        assert (profile.clip_augmentation, profile.clip_precision_cuda, profile.ma_resize) == \
            ("cached", "fp32", "pil")
    cpu = ClipStudyConfig(profile="full", device="cpu")
    assert (cpu.augmentation, cpu.precision, cpu.num_workers) == ("fresh", "fp32", 0)
    assert cpu.augmentation_label == "fresh_per_epoch" and cpu.replace(seed=3).precision == "fp32"
    cuda = ClipStudyConfig(profile="full", device="cuda")  # resolved without touching a GPU
    assert cuda.precision == "fp16_as_released" and 1 <= cuda.num_workers <= 8
    assert ClipStudyConfig(profile="full", device="cuda", precision="fp32").precision == "fp32"
    lite_cfg = ClipStudyConfig(profile="lite", device="cuda")
    assert (lite_cfg.augmentation, lite_cfg.precision) == ("cached", "fp32")
    assert lite_cfg.augmentation_label == "cached:0"  # the lite recipe trains on the fixed view
    assert lite_cfg.released_recipe().augmentation_label == "cached:8"
    assert (full.clip_recipe, lite.clip_recipe, tiny.clip_recipe) == ("released", "lite", "released")
    assert ClipStudyConfig(profile="tiny", augmentation="fresh").fresh_views
    assert MAStudyConfig(profile="full").resize == "released_cv2"
    assert MAStudyConfig(profile="lite").resize == MAStudyConfig(profile="tiny").resize == "pil"
    assert MAStudyConfig(profile="full", resize="pil").resize == "pil"
    ma = MAStudyConfig(profile="tiny", val_selection="as_released", batch_size=2,
                       max_steps_per_epoch=1)
    recipe = ma.train_config(20)
    assert (recipe.val_selection, recipe.batch_size, recipe.max_steps_per_epoch) == \
        ("as_released", 2, 1)
    assert train_config("full").batch_size == 8 and MAStudyConfig().val_selection == "corrected"


@pytest.mark.parametrize("cls, kwargs, match", [
    (ClipStudyConfig, dict(profile="full", precision="fp16_as_released"), "device='cuda'"),
    (ClipStudyConfig, dict(profile="lite", weights="random"), "profile 'full' only"),
    (MAStudyConfig, dict(profile="tiny", weights="random"), "profile 'full' only"),
    (ClipStudyConfig, dict(weights="none"), "weights must be"),
    (ClipStudyConfig, dict(profile="lite", clip_checkpoint="x.pt"), "clip_checkpoint"),
    (ClipStudyConfig, dict(profile="full", clip_checkpoint="x.pt", weights="random"),
     "exclude each other"),
    (ClipStudyConfig, dict(augmentation="sometimes"), "augmentation must be"),
    (MAStudyConfig, dict(profile="lite", vit_checkpoint="x.npz"), "vit_checkpoint"),
    (MAStudyConfig, dict(profile="lite", mllm_model_id="x"), "mllm_model_id"),
    (MAStudyConfig, dict(semantic_source="official:"), "official:DIR"),
    (MAStudyConfig, dict(profile="lite", semantic_source="llava-hf/llava-1.5-7b-hf"),
     "cannot load"),
    (MAStudyConfig, dict(profile="full", semantic_source="a/b", mllm_model_id="c/d"), "not both"),
    (MAStudyConfig, dict(val_selection="best"), "val_selection"),
    (MAStudyConfig, dict(precision="fp16_as_released"), "MA-AGIQA"),
    (MAStudyConfig, dict(resize="nearest"), "resize"),
    (MAStudyConfig, dict(batch_size=0), "batch_size"),
    (MAStudyConfig, dict(max_steps_per_epoch=0), "max_steps_per_epoch"),
])
def test_bad_settings_are_one_sentence(cls, kwargs, match):
    with pytest.raises(AgiqaError, match=match):
        cls(**kwargs)


def test_new_settings_reach_the_cli_and_the_notebook_namespace():
    from agiqa_lib.cli import build_parser
    from agiqa_lib.commands.options import config_from_args

    args = build_parser().parse_args(
        ["train-clip", "agiqa3k", "--profile", "full", "--clip-checkpoint", "/w/clip.bin",
         "--augmentation", "cached", "--precision", "fp32", "--num-workers", "2"])
    clip = config_from_args(ClipStudyConfig, args)
    assert (clip.clip_checkpoint, clip.augmentation, clip.num_workers) == ("/w/clip.bin",
                                                                           "cached", 2)
    assert clip.clip_kwargs() == {"checkpoint": "/w/clip.bin"}
    args = build_parser().parse_args(
        ["train-ma", "aigiqa20k", "--profile", "full", "--weights", "random", "--resize", "pil",
         "--val-selection", "as_released", "--semantic-source", "official:/v", "--batch-size",
         "2", "--max-steps-per-epoch", "1"])
    ma = config_from_args(MAStudyConfig, args)
    assert (ma.weights, ma.resize, ma.val_selection, ma.official_vectors_dir) == \
        ("random", "pil", "as_released", "/v")
    args = build_parser().parse_args(["train-ma", "agiqa3k", "--profile", "full",
                                      "--vit-checkpoint", "/w/vit.npz", "--mllm-model-id",
                                      "/w/owl2"])
    ma = config_from_args(MAStudyConfig, args)
    assert (ma.vit_checkpoint, ma.mllm_source()) == ("/w/vit.npz", "/w/owl2")
    # notebooks: injected parameters reach the config through from_mapping(globals())
    namespace = {"profile": "full", "weights": "random", "n_aug_views": 2, "other": object()}
    assert ClipStudyConfig.from_mapping(namespace).clip_kwargs() == {"pretrained": None}


# ----------------------------------------------------------------------------- CLIP fp16


@pytest.fixture
def tiny_full(tmp_path) -> Path:
    return save_tiny_full_clip(tmp_path / "tiny_full")


def _fp16_model(tiny_full: Path, precision: str = "fp16_as_released"):
    bundle = create_clip("full", checkpoint=tiny_full, precision=precision)
    torch.manual_seed(0)
    return create_clip_agiqa("full", ClipAgiqaConfig(frozen_precision=precision), bundle=bundle,
                             checkpoint=str(tiny_full))


def test_fp16_as_released_keeps_clip_and_context_fp16_and_the_head_fp32(tiny_full):
    from open_clip.transformer import LayerNormFp32

    model = _fp16_model(tiny_full)
    ctx = model.prompt_learner.ctx
    assert ctx.dtype == torch.float16  # clip_agiqa.py:86-89: dtype=clip_model.dtype
    assert all(p.dtype == torch.float32 for p in model.regression.parameters())
    assert model.clip.visual.conv1.weight.dtype == torch.float16
    assert isinstance(model.clip.ln_final, LayerNormFp32)
    assert model.clip.ln_final.weight.dtype == torch.float32  # OpenAI CLIP LayerNorm: fp32
    with torch.no_grad():  # normalised in fp16, then cast (clip_agiqa.py:214-223)
        raw = model.text_tower.encode_with_embeddings(model.prompt_learner(),
                                                      model.prompt_learner.tokenized_prompts)
        assert raw.dtype == torch.float16
        assert torch.equal(model.text_features(), (raw / raw.norm(dim=-1, keepdim=True)).float())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    model.train()
    images = torch.rand(4, 3, 32, 32)
    out = model(images)
    assert out.dtype == torch.float32
    torch.nn.functional.mse_loss(out, torch.tensor([1.0, 2.0, 3.0, 4.0])).backward()
    assert ctx.grad is not None and ctx.grad.dtype == torch.float16
    before = ctx.detach().clone()
    optimizer.step()
    assert ctx.dtype == torch.float16 and not torch.equal(before, ctx.detach())
    assert optimizer.state[ctx]["momentum_buffer"].dtype == torch.float16
    corrected = _fp16_model(tiny_full, "fp16")  # fp16 encoders, fp32 context (master weights)
    assert corrected.prompt_learner.ctx.dtype == torch.float32


def test_fp32_clip_cast_to_fp16_equals_open_clips_own_fp16(tiny_full):
    built = create_clip("full", checkpoint=tiny_full, precision="fp16").model
    cast = create_clip_agiqa("full", ClipAgiqaConfig(frozen_precision="fp16_as_released"),
                             checkpoint=str(tiny_full)).clip
    a, b = built.state_dict(), cast.state_dict()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_fp16_checkpoint_records_precision_and_scores_in_fp32_on_cpu(tiny_full, tmp_path):
    model = _fp16_model(tiny_full).eval()
    with torch.no_grad():
        model.regression[4].bias.fill_(2.5)
        model.prompt_learner.ctx.normal_()
    path = save_checkpoint(model, tmp_path / "clip.safetensors")
    meta = read_metadata(path)
    assert (meta["precision"], meta["weights"]) == ("fp16_as_released", "pretrained")
    with pytest.warns(RuntimeWarning, match="fp32"):
        loaded = load_checkpoint(path)
    assert loaded.config.frozen_precision == "fp32"
    assert torch.equal(loaded.prompt_learner.ctx, model.prompt_learner.ctx.float())
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), atol=2e-2, rtol=1e-2)


# ----------------------------------------------------------------------------- fresh views


def _image_files(folder: Path, n: int, size: int = 48) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
        pixels[:, :, i % 3] = np.linspace(0, 255, size + 8, dtype=np.uint8)  # some structure
        path = folder / f"gen{i % 3}_normal_{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def test_fresh_views_are_seeded_per_epoch_and_image_whatever_the_workers(tmp_path):
    paths = _image_files(tmp_path / "img", 10)
    transform = create_clip("tiny").preprocess_train  # RandomResizedCrop(0.08-1) + flip
    encode = lambda x: x.flatten(1)[:, ::97]  # noqa: E731 - a pixel sample stands in for CLIP
    batches = ImageBatches(paths, np.arange(10.0), transform, encode, batch_size=4, seed=1)
    epoch0 = list(batches.epoch(0))
    assert len(epoch0) == 2 and epoch0[0][0].shape[0] == 4  # last partial batch dropped
    again = list(batches.epoch(0))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch0, again))
    epoch1 = list(batches.epoch(1))
    assert not torch.equal(epoch0[0][0], epoch1[0][0])
    workers = ImageBatches(paths, np.arange(10.0), transform, encode, batch_size=4, seed=1,
                           num_workers=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, workers.epoch(0)))
    # an image gets the same view whichever batch (and run) it is in: seeded by its id
    one = ImageBatches(paths[3:4], [3.0], transform, encode, batch_size=1, seed=1, ids=[3])
    (single, _), = list(one.epoch(0))
    where = [i for i, (_, mos) in enumerate(epoch0) if 3.0 in mos.tolist()]
    if where:
        feats, mos = epoch0[where[0]]
        assert torch.equal(feats[mos.tolist().index(3.0)], single[0])


class _DyingImageBatches(ImageBatches):
    """Fresh views that crash in epoch `die_at` (a killed run)."""

    die_at = 1

    def epoch(self, epoch: int):
        if epoch == self.die_at:
            raise KeyboardInterrupt("killed")
        yield from super().epoch(epoch)


def test_fresh_view_training_resumes_to_the_uninterrupted_result(tmp_path):
    paths = _image_files(tmp_path / "img", 12)
    bundle = create_clip("tiny")
    mos = np.linspace(1, 4, 12)
    with torch.no_grad():
        test = torch.stack([bundle.preprocess_val(Image.open(p).convert("RGB")) for p in paths])
        test_features = bundle.model.encode_image(test)
    encode = lambda x: bundle.model.encode_image(x)  # noqa: E731
    config = TrainConfig(epochs=3, batch_size=4, checkpoint_every=1, seed=2)
    eval_sets = {"test": EvalSet(test_features[8:], mos[8:])}

    def model():
        torch.manual_seed(0)
        return create_clip_agiqa("tiny", bundle=bundle)

    args = (paths[:8], mos[:8], bundle.preprocess_train, encode, 4, 2)
    reference = train_clip_agiqa(model(), ImageBatches(*args), eval_sets, config, progress=False)
    state = tmp_path / "state.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_clip_agiqa(model(), _DyingImageBatches(*args), eval_sets, config, state, False)
    resumed = train_clip_agiqa(model(), ImageBatches(*args), eval_sets, config, state, False)
    for name, tensor in reference.states["last"].items():
        torch.testing.assert_close(resumed.states["last"][name], tensor)
    pd.testing.assert_frame_equal(resumed.history, reference.history)
    # a cached run's state is never resumed by a fresh run (and vice versa)
    from agiqa_lib.clip_agiqa.batches import CachedFeatureBatches

    cached = CachedFeatureBatches(test_features[:8].unsqueeze(0), mos[:8], 4, 2)
    other = train_clip_agiqa(model(), cached, eval_sets, config, state, False)
    assert len(other.history) == 3


def test_fit_selection_rules_trains_on_fresh_views_and_evaluates_the_cached_test_view(tmp_path):
    from agiqa_lib.clip_agiqa.train import ClipFeatures

    paths = _image_files(tmp_path / "img", 34, size=24)
    bundle = create_clip("tiny")
    with torch.no_grad():
        test = torch.stack([bundle.preprocess_val(Image.open(p).convert("RGB")) for p in paths])
        features = ClipFeatures(bundle.model.encode_image(test))  # no augmented views cached
    calls = []

    def encode(x):
        calls.append(len(x))
        return bundle.model.encode_image(x)

    split = pd.Series(["train"] * 30 + ["test"] * 4)
    run = fit_selection_rules(lambda: create_clip_agiqa("tiny", bundle=bundle), features,
                              np.linspace(1, 4, 34), split, TrainConfig(epochs=2, batch_size=4),
                              progress=False, fresh=FreshViews(paths, bundle.preprocess_train,
                                                               encode))
    assert set(run.predictions) == {"best_on_test", "last", "best_on_val"}
    assert all(len(p) == 4 for p in run.predictions.values())
    # train (30 images: 7 batches of 4) and train minus 3 val (27: 6 batches), 2 epochs each
    assert sum(calls) == 2 * (28 + 24)


def _write_agiqa3k(root: Path, n: int = 30, prompts: int = 5) -> Path:
    """An AGIQA-3K-format folder: data.csv and n small JPEGs from 3 'generators'."""
    names = [f"gen{i % 3}_normal_{i:03d}.jpg" for i in range(n)]
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    for i, name in enumerate(names):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        pixels[..., 0] = np.uint8(8 * i % 256)
        Image.fromarray(pixels).save(root / "images" / name, quality=95)
    mos = np.round(np.linspace(0.5, 4.5, n)[rng.permutation(n)], 3)
    table = pd.DataFrame({"name": names, "prompt": [f"prompt {i % prompts}" for i in range(n)],
                          "adj1": "", "adj2": "", "style": "", "mos_quality": mos,
                          "std_quality": 0.5, "mos_align": mos, "std_align": 0.5})
    table.to_csv(root / "data.csv", index=False)
    return root


def test_clip_study_records_how_views_and_precision_were_made(tmp_path):
    from agiqa_lib.clip_agiqa import study

    root = _write_agiqa3k(tmp_path / "ds", n=20)
    cfg = ClipStudyConfig(dataset="agiqa3k", root=str(root), profile="tiny", augmentation="fresh",
                          epochs=1, n_boot=20, out_dir=str(tmp_path / "out"), progress=False,
                          results_path=str(tmp_path / "out" / "results.jsonl"))
    result = study.run(cfg)
    assert result.data.features.augmented is None  # fresh views are never cached
    records = [json.loads(line) for line in
               (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["model"] in ("clip_agiqa", "image_only_control")]
    assert trained and {r["augmentation"] for r in trained} == {"fresh_per_epoch"}
    assert {r["precision"] for r in records} == {"fp32"}
    assert {r["weights"] for r in records} == {"pretrained"}
    assert result.checkpoint.name == "clip_agiqa_agiqa3k_tiny.safetensors"


# ----------------------------------------------------------------------------- MA cv2


def _release_reference(path: str | Path) -> torch.Tensor:
    """MA-AGIQA data/AIGC_general.py:35-41 (d5d025e) + utils/process.py Normalize(0.5, 0.5)."""
    import cv2

    d_img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    d_img = cv2.resize(d_img, (224, 224), interpolation=cv2.INTER_CUBIC)
    d_img = cv2.cvtColor(d_img, cv2.COLOR_BGR2RGB)
    d_img = np.array(d_img).astype("float32") / 255
    d_img = np.transpose(d_img, (2, 0, 1))
    return torch.from_numpy((d_img - 0.5) / 0.5)


def test_released_cv2_transform_equals_the_release_code(tmp_path):
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    files = {"rgb.png": rgb, "grey.png": rgb.convert("L"), "rgba.png": rgb.convert("RGBA"),
             "small.jpg": rgb.resize((100, 90))}
    transform = create_iqa_backbone("tiny").transform(False, resize="released_cv2")
    assert isinstance(transform, ReleasedCv2Transform) and transform.reads_paths
    for name, image in files.items():
        path = tmp_path / name
        image.save(path)
        out = transform(str(path))
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32
        assert torch.equal(out, _release_reference(path)), name
    # a decoded image (scoring) gets the same resize: equal for lossless files
    assert torch.equal(transform(Image.open(tmp_path / "rgb.png")),
                       _release_reference(tmp_path / "rgb.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(AgiqaError, match="broken.png"):
        transform(str(tmp_path / "broken.png"))
    assert "INTER_CUBIC" in repr(transform)  # cache keys of the two resizes differ
    pil = create_iqa_backbone("tiny").transform(False)
    assert repr(pil) != repr(transform)


@pytest.mark.real_data
def test_released_cv2_transform_matches_opencv_on_real_agiqa3k_images(agiqa3k_root):
    from agiqa_lib.core.io import open_rgb

    names = pd.read_csv(agiqa3k_root / "data.csv")["name"].iloc[::500].tolist()
    transform = ReleasedCv2Transform()
    pil = create_iqa_backbone("tiny").transform(False, resize="pil")
    gaps = []
    for name in names:
        path = agiqa3k_root / "images" / name
        reference = _release_reference(path)
        assert torch.equal(transform(str(path)), reference), name
        decoded = transform(open_rgb(path))  # PIL's JPEG decoder, then the same resize
        assert (decoded - reference).abs().max() <= 4 / 255 * 2, name
        gaps.append(float((pil(open_rgb(path)) - reference).abs().mean()) / 2)  # of [0, 1]
    # PIL bicubic (antialiased) vs OpenCV INTER_CUBIC: about 1 % of the pixel range
    assert 0.002 < float(np.mean(gaps)) < 0.05


def test_items_hand_the_released_transform_the_file_path(tmp_path):
    paths = _image_files(tmp_path / "img", 3)
    seen = []

    class Recording(ReleasedCv2Transform):
        def __call__(self, image):
            seen.append(image)
            return super().__call__(image)

    df = pd.DataFrame({"name": [Path(p).name for p in paths], "path": paths,
                       "mos": [1.0, 2.0, 3.0], "generator": "g"})
    data = PreparedData("x", "full", "fixed", df, pd.Series(["train"] * 3), None, None)
    x, *_ = MAItems(data, np.arange(3), 28, 0, transform=Recording())[1]
    assert seen == [paths[1]] and torch.equal(x, _release_reference(paths[1]))


# ----------------------------------------------------------------------------- MA selection


def _synthetic_data(val_order=None) -> PreparedData:
    from test_ma_training import _synthetic

    data = _synthetic()
    data.val_order = val_order
    return data


def test_released_val_rows_follow_the_split_order_and_drop_the_partial_batch():
    data = _synthetic_data(val_order=np.array([47, 40, 45, 41, 44, 42, 46, 43]))
    assert data.released_val_rows(8).tolist() == [47, 40, 45, 41, 44, 42, 46, 43]
    assert data.released_val_rows(3).tolist() == [47, 40, 45, 41, 44, 42]
    assert _synthetic_data().released_val_rows(3).tolist() == list(range(40, 46))


def _run_with_val_scores(monkeypatch, scores, val_selection, tmp_path=None):
    from agiqa_lib.ma_agiqa import train as ma_train

    it = iter(scores)
    monkeypatch.setattr(ma_train, "_val_scores", lambda *a, **k: next(it))
    data = _synthetic_data()
    cfg = replace(train_config("tiny", epochs=len(scores)), val_selection=val_selection)
    model = ma_train.new_model(data, "released_gate", seed=0)
    return ma_train.train_run(model, data, cfg, progress=False), data, cfg


def test_as_released_selection_starts_at_zero(monkeypatch):
    with pytest.warns(RuntimeWarning, match="above 0"):
        run, *_ = _run_with_val_scores(monkeypatch, [(-0.2, -0.1), (-0.1, 0.05), (0.0, 0.0)],
                                       "as_released")
    assert run.selection == "best_on_val_as_released" and run.best_epoch == 3
    assert "released run would have saved no checkpoint" in run.notes[0]
    run, *_ = _run_with_val_scores(monkeypatch, [(-0.2, 0.3), (0.4, 0.3), (0.2, 0.2)],
                                   "as_released")
    assert (run.best_epoch, run.notes) == (2, [])
    corrected, *_ = _run_with_val_scores(monkeypatch, [(-0.2, -0.1), (-0.1, 0.05), (-0.5, 0.0)],
                                         "corrected")
    assert (corrected.selection, corrected.best_epoch) == ("best_on_val", 2)


def test_as_released_records_name_their_selection(monkeypatch, tmp_path):
    from agiqa_lib.ma_agiqa.study import records

    run, data, _ = _run_with_val_scores(monkeypatch, [(0.3, 0.3)], "as_released")
    cfg = MAStudyConfig(profile="tiny", val_selection="as_released", out_dir=str(tmp_path))
    out = records(run, data, cfg)
    assert {r.selection for r in out} == {"best_on_val_as_released"}
    assert all(r.extra["val_selection"] == "as_released" and r.extra["resize"] == "pil"
               and r.weights == "pretrained" for r in out)


def test_as_released_validation_reads_the_released_val_subset(monkeypatch):
    """Without patching: the as-released val score uses the drop_last subset in split order."""
    from agiqa_lib.ma_agiqa import train as ma_train

    seen = []
    original = ma_train._val_scores
    monkeypatch.setattr(ma_train, "_val_scores",
                        lambda model, data, rows, cfg, mos: seen.append(list(rows))
                        or original(model, data, rows, cfg, mos))
    data = _synthetic_data(val_order=np.array([47, 40, 45, 41, 44, 42, 46, 43]))
    cfg = replace(train_config("tiny", epochs=1, batch_size=3), val_selection="as_released")
    ma_train.train_run(ma_train.new_model(data, "maniqa", 0), data, cfg, progress=False)
    assert seen == [[47, 40, 45, 41, 44, 42]]


def test_fingerprint_of_default_settings_is_unchanged():
    """Runs saved before the new settings existed stay resumable."""
    import hashlib

    from agiqa_lib.ma_agiqa.train import _fingerprint, new_model

    data = _synthetic_data()
    model = new_model(data, "released_gate", 0)
    cfg = train_config("tiny")
    old_model = {k: v for k, v in asdict(model.cfg).items()
                 if k not in ("resize", "weights", "semantic_source", "image_size")}
    old_recipe = {k: v for k, v in asdict(replace(cfg, epochs=0, device="", num_workers=0)).items()
                  if k not in ("val_selection", "max_steps_per_epoch")}
    text = json.dumps([json.dumps(old_model), old_recipe, data.dataset, data.protocol,
                       data.df["name"].tolist(), data.split.tolist(),
                       data.df["mos"].round(6).tolist()])
    assert _fingerprint(model, data, cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]
    other = replace(cfg, val_selection="as_released")
    assert _fingerprint(model, data, other) != _fingerprint(model, data, cfg)
    larger = new_model(replace(data, image_size=256), "released_gate", 0)
    assert _fingerprint(larger, data, cfg) != _fingerprint(model, data, cfg)


# ----------------------------------------------------------------------------- semantic source


def test_official_vectors_train_and_scoring_needs_their_mllm(tmp_path, no_network):
    from agiqa_lib.ma_agiqa import study
    from agiqa_lib.ma_agiqa.model import load_model, load_scorer
    from agiqa_lib.ma_agiqa.semantic import OFFICIAL_MODEL_ID

    root = _write_agiqa3k(tmp_path / "ds", n=30)
    vectors = tmp_path / "mplug_tensor"
    vectors.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in pd.read_csv(root / "data.csv")["name"]:
        for question in ("semantic_content", "coherence"):
            torch.save(torch.randn(1, 4096, generator=g).half(),
                       vectors / f"{Path(name).stem}_{question}.pt")
    cfg = MAStudyConfig(dataset="agiqa3k", root=str(root), profile="tiny",
                        variants=("released_gate",), epochs=1, n_boot=20,
                        semantic_source=f"official:{vectors}", out_dir=str(tmp_path / "out"),
                        results_path=str(tmp_path / "out" / "results.jsonl"), progress=False)
    result = study.run(cfg)
    data = result.data
    assert tuple(data.semantic.shape) == (30, 2, 4096)
    assert data.mllm_model_id == OFFICIAL_MODEL_ID and not data.mllm_is_stand_in
    model = result.run("released_gate").model
    assert (model.cfg.semantic_source, model.cfg.fusion.semantic_dim) == ("official", 4096)
    records = [json.loads(line) for line in Path(cfg.results_path).read_text().splitlines()]
    assert {r["mllm_model_id"] for r in records} == {OFFICIAL_MODEL_ID}
    assert {r["extra"]["semantic_source"] for r in records} == {f"official:{vectors}"}
    path = study.save_scorer_checkpoint(result, cfg)
    assert load_model(path).cfg.semantic_source == "official"
    with pytest.raises(AgiqaError, match=r"official MA-AGIQA semantic vectors.*mplug-owl2"):
        load_scorer(path)
