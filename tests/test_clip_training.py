"""CLIP-AGIQA training: schedule, cached batches, one step lowers the loss, resume, selection."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from clip_standin import standin_model
from PIL import Image

from agiqa_lib.clip_agiqa.batches import CachedFeatureBatches, ImageBatches
from agiqa_lib.clip_agiqa.train import (SELECTION_RULES, ClipFeatures, EvalSet, TrainConfig,
                                     carve_validation, fit_selection_rules, lr_at_epoch, predict,
                                     train_clip_agiqa)
from agiqa_lib.core.errors import AgiqaError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_schedule_is_constant_warmup_then_cosine():
    cfg = TrainConfig(epochs=100)
    lrs = [lr_at_epoch(e, cfg) for e in range(100)]
    assert lrs[0] == 1e-5
    assert lrs[1] == pytest.approx(0.002)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[51] == pytest.approx(0.001)
    assert 0 < lrs[-1] < 1e-5


def test_cached_batches_drop_last_and_draw_one_view_per_image():
    k, n, d = 3, 70, 4
    views = torch.arange(k, dtype=torch.float32).view(k, 1, 1).expand(k, n, d).clone()
    views[..., 1] = torch.arange(n, dtype=torch.float32)  # image index in feature dim 1
    mos = np.arange(n, dtype=float)
    batches = CachedFeatureBatches(views, mos, batch_size=32, seed=0)
    assert len(batches) == 2  # 70 // 32, last partial batch dropped (Dassl)
    epoch0 = list(batches.epoch(0))
    assert [f.shape for f, _ in epoch0] == [(32, d), (32, d)]
    for feats, target in epoch0:
        assert torch.equal(feats[:, 1], target.float())  # features and MOS stay paired
    seen_views = torch.cat([f[:, 0] for f, _ in epoch0])
    assert set(seen_views.tolist()) == {0.0, 1.0, 2.0}
    again = list(batches.epoch(0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, again))  # reproducible
    other = list(batches.epoch(1))
    assert not torch.equal(epoch0[0][0], other[0][0])


def _synthetic(n=200, d=8, seed=0):
    """Features whose direction w carries the MOS; K=2 noisy 'augmented' views."""
    gen = torch.Generator().manual_seed(seed)
    test = torch.randn(n, d, generator=gen)
    w = torch.randn(d, generator=gen)
    mos = (torch.nn.functional.normalize(test, dim=-1) @ w).numpy() + 2.5
    aug = test.unsqueeze(0) + 0.05 * torch.randn(2, n, d, generator=gen)
    return ClipFeatures(test, aug), mos


def test_one_step_lowers_the_loss():
    model = standin_model(dropout=0.0)
    feats, mos = _synthetic(64)
    x, y = feats.test[:32], torch.tensor(mos[:32], dtype=torch.float32)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    loss = torch.nn.functional.mse_loss(model.score_features(x), y)
    opt.zero_grad()
    loss.backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0  # the prompts do get a gradient
    opt.step()
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(model.score_features(x), y)
    assert after < loss


def test_training_learns_and_keeps_best_and_last():
    feats, mos = _synthetic()
    model = standin_model()
    batches = CachedFeatureBatches(feats.augmented[:, :160], mos[:160], batch_size=16)
    test = EvalSet(feats.test[160:], mos[160:])
    result = train_clip_agiqa(model, batches, {"test": test},
                              TrainConfig(epochs=12, lr=0.05), progress=False)
    hist = result.history
    assert list(hist["epoch"]) == list(range(1, 13))
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[1]
    assert hist["test_srcc"].max() > 0.8
    best = result.best_epochs["best_on_test"]
    assert hist.loc[hist["epoch"] == best, "test_srcc"].item() == hist["test_srcc"].max()
    model.load_trainable_state_dict(result.states["best_on_test"])
    from scipy import stats

    assert stats.spearmanr(predict(model, test.features), test.mos)[0] == pytest.approx(
        hist["test_srcc"].max(), abs=1e-6)


class _Killed(RuntimeError):
    pass


class _DyingBatches(CachedFeatureBatches):
    """Raises at the start of epoch `die_at`: a run killed mid-training."""

    def __init__(self, *args, die_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.die_at = die_at

    def epoch(self, epoch):
        if epoch == self.die_at:
            raise _Killed()
        return super().epoch(epoch)


def test_killed_run_resumes_to_the_same_result(tmp_path, caplog):
    feats, mos = _synthetic(96)
    cfg = TrainConfig(epochs=6, lr=0.05, checkpoint_every=2)
    eval_sets = {"test": EvalSet(feats.test[64:], mos[64:])}
    args = (feats.augmented[:, :64], mos[:64])

    reference = train_clip_agiqa(standin_model(), CachedFeatureBatches(*args, batch_size=16),
                                 eval_sets, cfg, progress=False)
    ckpt = tmp_path / "state.safetensors"
    with pytest.raises(_Killed):
        train_clip_agiqa(standin_model(), _DyingBatches(*args, batch_size=16, die_at=3),
                         eval_sets, cfg, ckpt, progress=False)
    assert ckpt.is_file()  # saved after epoch 2
    calls = []

    class Counting(CachedFeatureBatches):
        def epoch(self, epoch):
            calls.append(epoch)
            return super().epoch(epoch)

    resumed = train_clip_agiqa(standin_model(), Counting(*args, batch_size=16), eval_sets, cfg,
                               ckpt, progress=False)
    assert calls == [2, 3, 4, 5]  # epochs 0-1 came from the checkpoint
    pd.testing.assert_frame_equal(resumed.history, reference.history)
    for rule in ("last", "best_on_test"):
        for name, value in reference.states[rule].items():
            assert torch.allclose(resumed.states[rule][name], value, atol=1e-6)
    # another config never resumes from this state: it starts over (and says so)
    calls.clear()
    with caplog.at_level("WARNING"):
        other = train_clip_agiqa(standin_model(), Counting(*args, batch_size=16), eval_sets,
                                 TrainConfig(epochs=3, lr=0.05), ckpt, progress=False)
    assert calls == [0, 1, 2] and len(other.history) == 3
    assert "belongs to another run" in caplog.text


def test_selection_rules_without_and_with_a_val_part():
    feats, mos = _synthetic(120)
    split = pd.Series(["train"] * 90 + ["test"] * 30)
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=16)
    run = fit_selection_rules(lambda: standin_model(), feats, mos, split, cfg, progress=False)
    assert set(run.predictions) == set(SELECTION_RULES)
    assert set(run.histories) == {"train", "train_minus_val"}
    assert "val_srcc" in run.histories["train_minus_val"]
    assert all(p.shape == (30,) for p in run.predictions.values())

    split_val = pd.Series(["train"] * 80 + ["val"] * 10 + ["test"] * 30)
    run = fit_selection_rules(lambda: standin_model(use_text=False), feats, mos, split_val, cfg,
                              progress=False)
    assert set(run.histories) == {"train"}
    assert set(run.predictions) == set(SELECTION_RULES)
    with pytest.raises(AgiqaError, match="unknown selection"):
        fit_selection_rules(standin_model, feats, mos, split, cfg, rules=("best_on_train",))


@pytest.mark.slow
def test_selection_runs_side_by_side_equal_the_runs_one_after_another():
    """The two runs of a split without val parts (train; train minus val) in two one-thread
    workers give what one-thread runs here give: histories, predictions, chosen weights."""
    feats, mos = _synthetic(120)
    split = pd.Series(["train"] * 90 + ["test"] * 30)
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=16)
    alone = fit_selection_rules(standin_model, feats, mos, split, cfg, progress=False)
    apart = fit_selection_rules(standin_model, feats, mos, split, cfg, progress=False,
                                parallel_runs=2, cores=2)
    for name in alone.histories:
        pd.testing.assert_frame_equal(apart.histories[name], alone.histories[name])
    for rule in SELECTION_RULES:
        np.testing.assert_array_equal(apart.predictions[rule], alone.predictions[rule])
        assert apart.best_epochs[rule] == alone.best_epochs[rule]
        assert all(torch.equal(apart.states[rule][k], v) for k, v in alone.states[rule].items())


@pytest.mark.slow
def test_plans_of_two_models_side_by_side_equal_each_plan_alone():
    """`fit_plans` trains the runs of two plans (one run, as the released recipe beside
    another, and two) in one pool of two one-thread workers, and each plan's SelectionRun
    equals the plan trained alone on one thread here, in the order the plans were given."""
    from agiqa_lib.clip_agiqa.train import fit_plans, plan_selection_rules

    feats, mos = _synthetic(120)
    split = pd.Series(["train"] * 90 + ["test"] * 30)
    one = TrainConfig(epochs=4, lr=0.05, batch_size=16)
    two = TrainConfig(epochs=2, lr=0.01, batch_size=16, seed=1)

    def plans():
        return [plan_selection_rules(standin_model, feats, mos, split, one,
                                     rules=("best_on_test", "last"), progress=False),
                plan_selection_rules(lambda: standin_model(use_text=False), feats, mos, split,
                                     two, progress=False)]

    together = fit_plans(plans(), parallel_runs=2, cores=2, progress=False)
    alone = [fit_plans([plan], progress=False)[0] for plan in plans()]
    assert [set(r.histories) for r in together] == [{"train"}, {"train", "train_minus_val"}]
    for got, want in zip(together, alone):
        assert set(got.predictions) == set(want.predictions)
        for rule, pred in want.predictions.items():
            np.testing.assert_array_equal(got.predictions[rule], pred)
            assert got.best_epochs[rule] == want.best_epochs[rule]
    assert not np.array_equal(together[0].predictions["last"], together[1].predictions["last"])


def test_carved_validation_is_seeded_and_disjoint():
    train = np.arange(100, 200)
    fit, val = carve_validation(train, 0.1, seed=3)
    assert len(val) == 10 and len(fit) == 90
    assert set(fit) | set(val) == set(train) and not set(fit) & set(val)
    assert np.array_equal(carve_validation(train, 0.1, seed=3)[1], val)
    assert not np.array_equal(carve_validation(train, 0.1, seed=4)[1], val)


def test_end_to_end_batches_encode_images(tmp_path):
    paths = []
    for i in range(6):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (24, 20), (40 * i, 20, 200)).save(path)
        paths.append(str(path))
    model = standin_model()
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomResizedCrop(16, scale=(0.08, 1.0)),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    batches = ImageBatches(paths, np.arange(6.0), transform, model.encode_image, batch_size=4)
    out = list(batches.epoch(0))
    assert len(out) == 1 and out[0][0].shape == (4, model.embed_dim)
    result = train_clip_agiqa(model, batches, {}, TrainConfig(epochs=2), progress=False)
    assert len(result.history) == 2
    (tmp_path / "im0.png").write_bytes(b"broken")
    with pytest.raises(AgiqaError, match="im0.png"):
        list(ImageBatches(paths[:1], [1.0], transform, model.encode_image, batch_size=1).epoch(0))


def test_paired_srcc_difference_separates_a_better_model():
    from agiqa_lib.evaluation.metrics import paired_srcc_difference

    rng = np.random.default_rng(0)
    mos = rng.normal(size=300)
    good, bad = mos + 0.3 * rng.normal(size=300), mos + 2.0 * rng.normal(size=300)
    same = paired_srcc_difference(good, good, mos, n_boot=200)
    assert same == {"srcc_difference": 0.0, "lo": 0.0, "hi": 0.0}
    better = paired_srcc_difference(good, bad, mos, n_boot=200)
    assert 0 < better["lo"] < better["srcc_difference"] < better["hi"]


def test_cli_options_come_from_the_study_config():
    """train-clip takes exactly the fields of ClipStudyConfig (old spellings kept)."""
    import dataclasses

    from agiqa_lib.cli import build_parser
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.commands.options import config_from_args

    args = build_parser().parse_args(["train-clip", "agiqa3k", "--root", "/data", "--epochs", "5",
                                      "--aug-views", "2", "--protocol", "prompt_disjoint",
                                      "--device", "auto", "--precision", "fp16", "--fast"])
    cfg = config_from_args(ClipStudyConfig, args)
    assert (cfg.dataset, cfg.root, cfg.n_aug_views, cfg.protocol) == ("agiqa3k", "/data", 1,
                                                                      "prompt_disjoint")
    assert (cfg.epochs, cfg.n_boot) == (2, 100)  # --fast shrinks the schedule
    assert (cfg.device, cfg.precision, cfg.profile, cfg.seed) == ("auto", "fp16", "lite", 0)
    assert {f.name for f in dataclasses.fields(ClipStudyConfig)} <= set(vars(args))
    with pytest.raises(SystemExit):  # choices come from the config's field metadata
        build_parser().parse_args(["train-clip", "demo", "--profile", "huge"])


def test_feature_scale_option_parses_into_the_study_and_model_configs():
    """`--feature-scale` (and `--param feature_scale=...`) parse into ClipStudyConfig, which
    builds its models at that scale; the released recipe's default is 1.0."""
    from agiqa_lib.cli import build_parser
    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.commands.options import config_from_args
    from agiqa_lib.commands.train_clip import config_with_params

    parser = build_parser()
    default = config_from_args(ClipStudyConfig, parser.parse_args(["train-clip", "demo",
                                                                   "--recipe", "released"]))
    assert default.feature_scale == 1.0 and default.model_config().feature_scale == 1.0
    assert default.scale_tag == "" and study.checkpoint_path(default).name == \
        "clip_agiqa_demo_lite.safetensors"
    args = parser.parse_args(["train-clip", "demo", "--feature-scale", "22.6"])
    cfg = config_from_args(ClipStudyConfig, args)
    assert cfg.feature_scale == 22.6 and cfg.model_config(use_text=False).feature_scale == 22.6
    assert config_with_params(ClipStudyConfig, parser.parse_args(
        ["train-clip", "demo", "--param", "feature_scale=22.6"])).feature_scale == 22.6
    with pytest.raises(AgiqaError, match="feature_scale"):
        config_from_args(ClipStudyConfig, parser.parse_args(["train-clip", "demo",
                                                             "--feature-scale", "0"]))


def test_text_feature_scale_option_names_its_runs():
    """`--text-feature-scale` parses into the study and model configs and adds "_text{u}" to
    the run names; unset, names and models are those of the feature scale alone."""
    from agiqa_lib.cli import build_parser
    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.commands.options import config_from_args

    parser = build_parser()
    scaled = config_from_args(ClipStudyConfig, parser.parse_args(
        ["train-clip", "demo", "--feature-scale", "22.6", "--recipe", "released"]))
    assert scaled.text_feature_scale is None and scaled.scale_tag == "_scale22.6"
    cfg = config_from_args(ClipStudyConfig, parser.parse_args(
        ["train-clip", "demo", "--feature-scale", "22.6", "--text-feature-scale", "1"]))
    assert cfg.text_feature_scale == 1.0 and cfg.model_config().text_scale == 1.0
    assert cfg.scale_tag == "_scale22.6_text1"
    assert study.checkpoint_path(cfg).name == "clip_agiqa_demo_lite_scale22.6_text1.safetensors"
    with pytest.raises(AgiqaError, match="feature_scale"):
        ClipStudyConfig(text_feature_scale=-1.0)


def test_the_profile_picks_the_recipe_and_explicit_settings_win():
    """lite trains with the lite recipe (and the released one beside it), full and tiny with
    the released one; an unset field takes the recipe's value, a set one wins; `fast`
    shrinks both recipes' schedules."""
    from agiqa_lib.cli import build_parser
    from agiqa_lib.clip_agiqa.config import CLIP_RECIPES, ClipStudyConfig
    from agiqa_lib.commands.options import config_from_args

    def settings(cfg):
        return {name: getattr(cfg, name) for name in CLIP_RECIPES["released"]}

    lite = config_from_args(ClipStudyConfig, build_parser().parse_args(["train-clip", "demo"]))
    assert lite.recipe == "lite" and settings(lite) == CLIP_RECIPES["lite"]
    assert lite.trains_released_beside and lite.scale_tag == "_scale22.6_text1"
    released = lite.released_recipe()
    assert released.recipe == "released" and settings(released) == CLIP_RECIPES["released"]
    assert not released.trains_released_beside and released.scale_tag == ""
    assert (released.dataset, released.seed, released.out_dir) == (lite.dataset, lite.seed,
                                                                    lite.out_dir)
    for profile in ("full", "tiny"):
        cfg = ClipStudyConfig(profile=profile)
        assert cfg.recipe == "released" and settings(cfg) == CLIP_RECIPES["released"]
        assert not cfg.trains_released_beside
    chosen = ClipStudyConfig(epochs=20, feature_scale=4.0)
    assert (chosen.epochs, chosen.feature_scale, chosen.n_aug_views) == (20, 4.0, 0)
    assert chosen.released_recipe().epochs == 100  # the released recipe stays released
    assert not ClipStudyConfig(compare_released=False).trains_released_beside
    assert settings(ClipStudyConfig(recipe="released")) == CLIP_RECIPES["released"]
    fast = ClipStudyConfig(fast=True)
    assert (fast.epochs, fast.released_recipe().epochs, fast.released_recipe().n_aug_views) \
        == (2, 2, 1)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-clip", "demo", "--recipe", "best"])
    with pytest.raises(AgiqaError, match="recipe"):
        ClipStudyConfig(recipe="best")


@pytest.mark.slow
def test_study_with_the_lite_recipe_trains_the_released_recipe_beside_it(tmp_path):
    """recipe lite (tiny CLIP, demo data, fast, one epoch): CLIP-AGIQA and the control under the lite
    recipe, plus one released-recipe run on the same test rows with its own views, training
    state and records (released head input, its epochs and views, `recipe` in extra)."""
    import json

    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig

    cfg = ClipStudyConfig(dataset="demo", profile="tiny", recipe="lite", fast=True, epochs=1,
                          n_boot=20, out_dir=str(tmp_path / "out"), progress=False,
                          results_path=str(tmp_path / "results.jsonl"))
    result = study.run(cfg)
    released = result.released
    assert released is not None and released.data.cfg.recipe == "released"
    assert released.data.features.augmented is not None and result.data.features.augmented is None
    assert np.array_equal(released.data.rows("test"), result.data.rows("test"))
    assert set(released.predictions) == {("clip_agiqa", "best_on_test"), ("clip_agiqa", "last")}
    assert not np.allclose(released.predictions[("clip_agiqa", "last")],
                           result.runs["clip_agiqa"].predictions["last"])
    states = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "training").iterdir())
    assert sum("_scale22.6_text1_" in name for name in states) == 2  # CLIP-AGIQA + control
    assert len(states) == 3  # + the released run (one run: no carved val part)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    clip = [r for r in records if r["model"] == "clip_agiqa"]
    assert sorted((r["feature_scale"], r["selection"]) for r in clip) == [
        (1.0, "best_on_test"), (1.0, "last"),
        (22.6, "best_on_test"), (22.6, "best_on_val"), (22.6, "last")]
    for r in clip:
        lite = r["feature_scale"] == 22.6
        assert r["extra"]["recipe"] == ("lite" if lite else "released")
        assert r["augmentation"] == ("cached:0" if lite else "cached:1")
        assert r["text_feature_scale"] == (1.0 if lite else None)


@pytest.mark.slow
def test_train_clip_prints_the_released_recipe_rows_beside_the_lite_recipe(tmp_path, capsys):
    """`agiqa train-clip --recipe lite` prints its recipe and the released recipe's rows,
    labelled; `--no-compare-released` trains the lite recipe alone."""
    from agiqa_lib.cli import main

    base = ["train-clip", "demo", "--profile", "tiny", "--recipe", "lite", "--fast", "--epochs",
            "1", "--n-boot", "20", "--no-progress", "--out-dir", str(tmp_path / "out")]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "recipe lite (1 epochs)" in out
    assert re.search(r"clip_agiqa \(released recipe\)\s+best_on_test", out)
    assert re.search(r"clip_agiqa \(released recipe\)\s+last", out)
    assert main(base + ["--no-compare-released"]) == 0
    assert "released recipe" not in capsys.readouterr().out


@pytest.mark.slow
def test_study_at_a_feature_scale_names_its_runs_and_records_the_scale(tmp_path):
    """A study at scale 22.6 (tiny CLIP, demo data, one epoch): its own checkpoint and
    training states, a checkpoint that reloads at 22.6, records that carry the scale."""
    import json

    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.clip_agiqa.model import load_checkpoint

    cfg = ClipStudyConfig(dataset="demo", profile="tiny", fast=True, epochs=1, n_boot=20,
                          out_dir=str(tmp_path / "out"), progress=False, feature_scale=22.6,
                          results_path=str(tmp_path / "results.jsonl"))
    result = study.run(cfg)
    assert result.checkpoint.name == "clip_agiqa_demo_tiny_scale22.6.safetensors"
    assert load_checkpoint(result.checkpoint).config.feature_scale == 22.6
    states = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "training").iterdir())
    assert len(states) == 2 and all("_scale22.6_" in name for name in states)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["model"] in ("clip_agiqa", "image_only_control")]
    assert len(trained) == 6 and {r["feature_scale"] for r in trained} == {22.6}
    assert {r["feature_scale"] for r in records if r not in trained} == {None}  # no head


@pytest.mark.slow
def test_study_with_a_text_feature_scale_trains_apart_and_records_it(tmp_path):
    """Text scale 1.0 beside feature scale 22.6 (tiny CLIP, demo data, one epoch): its own
    training states (not resumed from the both-scaled run's), records and checkpoint."""
    import json

    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.clip_agiqa.model import load_checkpoint

    def run(**scales):
        cfg = ClipStudyConfig(dataset="demo", profile="tiny", fast=True, epochs=1, n_boot=20,
                              out_dir=str(tmp_path / "out"), progress=False,
                              results_path=str(tmp_path / "results.jsonl"), **scales)
        return study.run(cfg)

    both = run(feature_scale=22.6)
    apart = run(feature_scale=22.6, text_feature_scale=1.0)
    assert apart.checkpoint.name == "clip_agiqa_demo_tiny_scale22.6_text1.safetensors"
    assert load_checkpoint(apart.checkpoint).config.text_scale == 1.0
    states = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "training").iterdir())
    assert len(states) == 4 and sum("_scale22.6_text1_" in name for name in states) == 2
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["model"] in ("clip_agiqa", "image_only_control")]
    assert len(trained) == 12  # both runs kept: the text scale is part of the identity
    assert sorted({r["text_feature_scale"] for r in trained}, key=str) == [1.0, None]
    text_rows = {(r["model"], r["selection"]): r["srcc"] for r in trained
                 if r["model"] == "clip_agiqa"}
    assert len(text_rows) == 3
    last = both.table.set_index(["model", "selection"]).loc[("clip_agiqa", "last"), "srcc"]
    assert last != apart.table.set_index(["model", "selection"]).loc[("clip_agiqa", "last"),
                                                                      "srcc"]
