"""MA-AGIQA training: released augmentation and schedule, as-released test subset, resume,
checkpoints and one optimisation step on `tiny` (synthetic tokens, no images needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from agiqa_lib.evaluation.results import ResultRecord, add_records, read_records
from agiqa_lib.ma_agiqa.config import MAStudyConfig, train_config
from agiqa_lib.ma_agiqa.data import PreparedData, augment
from agiqa_lib.ma_agiqa.model import MAAGIQA, load_model, ma_agiqa_config, save_checkpoint
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.study import evaluate, records, seed_summary
from agiqa_lib.ma_agiqa.train import as_released_test_indices, new_model, predict, train_run


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _synthetic(n: int = 60, seed: int = 0) -> PreparedData:
    """Tiny-profile data whose MOS is a function of the tokens and the semantic vectors."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 64, 16, generator=g)
    semantic = torch.randn(n, 2, 64, generator=g)
    mos = 2.5 + tokens[:, :8].mean((1, 2)) * 3 + semantic[:, 0, :4].mean(1)
    split = pd.Series(["train"] * 40 + ["val"] * 8 + ["test"] * 12)
    df = pd.DataFrame({"name": [f"img{i}.jpg" for i in range(n)], "path": "",
                       "mos": mos.numpy().astype(float),
                       "generator": [f"gen{i % 3}" for i in range(n)]})
    return PreparedData("synthetic", "tiny", "fixed", df, split, tokens.half(), semantic,
                        in_channels=64)


def test_augment_rotation_and_flips_follow_released_code():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 3, 3)
    # prob 1: both steps always fire; the rotation k is drawn after the first coin
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out = augment(x, rng, prob=1.0, flip="as_released")
        rng = np.random.default_rng(seed)
        rng.random()
        k = int(rng.choice([1, 2, 3], p=[0.33, 0.33, 0.34]))
        expected = np.rot90(x.numpy(), k, axes=(1, 2))
        expected = np.fliplr(expected)  # released "horizontal" flip on C x H x W flips H
        np.testing.assert_array_equal(out.numpy(), expected)
    rng = np.random.default_rng(0)
    out = augment(x, rng, prob=1.0, flip="horizontal")
    rng = np.random.default_rng(0)
    rng.random()
    k = int(rng.choice([1, 2, 3], p=[0.33, 0.33, 0.34]))
    np.testing.assert_array_equal(out.numpy(), np.rot90(x.numpy(), k, axes=(1, 2))[:, :, ::-1])
    assert torch.equal(augment(x, np.random.default_rng(0), prob=0.0), x)


def test_augment_fires_with_probability_point_seven():
    x = torch.arange(16.0).view(1, 4, 4)
    changed = sum(not torch.equal(augment(x, np.random.default_rng(i), 0.7), x)
                  for i in range(2000))
    # unchanged only when neither step fires: 0.3 * 0.3 = 9 %
    assert abs(changed / 2000 - 0.91) < 0.03


def test_as_released_test_subset_drops_five_of_597():
    kept = as_released_test_indices(597, batch_size=8, seed=20)
    assert len(kept) == 592 and len(np.unique(kept)) == 592
    assert set(kept) <= set(range(597))
    np.testing.assert_array_equal(kept, as_released_test_indices(597, 8, 20))
    assert not np.array_equal(kept, as_released_test_indices(597, 8, 21))


def test_train_config_profiles_and_released_defaults():
    full = train_config("full")
    assert (full.epochs, full.batch_size, full.lr, full.weight_decay, full.t_max,
            full.eta_min, full.aug_prob, full.seed) == (30, 8, 1e-5, 1e-5, 50, 0.0, 0.7, 20)
    assert train_config("lite", epochs=3).epochs == 3
    with pytest.raises(Exception):
        train_config("lite", flip="diagonal")


def test_foreach_adam_equals_the_one_tensor_at_a_time_adam_to_the_bit():
    """`train.adam` (foreach) takes the steps PyTorch's CPU default Adam takes: same weights
    after a few steps with the released weight decay, lite-sized model, random tokens."""
    from agiqa_lib.ma_agiqa.model import create_ma_agiqa
    from agiqa_lib.ma_agiqa.train import adam

    cfg = train_config("lite")
    weights = []
    for make in (lambda p: adam(p, cfg),
                 lambda p: torch.optim.Adam(p, lr=cfg.lr, weight_decay=cfg.weight_decay)):
        torch.manual_seed(0)
        model = create_ma_agiqa("lite", "released_gate", pretrained=False).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make(params)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(8, model.cfg.maniqa.in_channels, model.cfg.maniqa.num_tokens,
                        generator=g)
        sem, y = torch.randn(8, 2, 384, generator=g), torch.rand(8, generator=g) * 4
        torch.manual_seed(2)  # dropout masks
        for _ in range(4):
            loss = torch.nn.functional.mse_loss(model.forward_tokens(x, sem).score, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in params]))
    assert cfg.weight_decay > 0 and torch.equal(weights[0], weights[1])


def test_one_optimisation_step_lowers_the_loss_on_tiny():
    data = _synthetic()
    model = new_model(data, "released_gate", seed=0)
    rows = data.rows("train")[:8]
    x, sem = data.tokens[rows].float(), data.semantic[rows]
    y = torch.as_tensor(data.df["mos"].to_numpy()[rows], dtype=torch.float32)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.eval()  # no dropout: the comparison is deterministic
    before = torch.nn.functional.mse_loss(model.forward_tokens(x, sem).score, y)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = torch.nn.functional.mse_loss(model.forward_tokens(x, sem).score, y)
    assert after.item() < before.item()
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_scheduler_steps_every_iteration_and_resume_matches(tmp_path):
    data = _synthetic()
    cfg = train_config("tiny", epochs=2, lr=1e-3)
    whole = train_run(new_model(data, "released_gate", 0), data, cfg, tmp_path / "a",
                      progress=False)
    iters = 40 // 8  # train rows // batch, drop_last
    expected_lr = 0.5 * 1e-3 * (1 + math.cos(math.pi * iters / 50))
    assert whole.history["lr"].iloc[0] == pytest.approx(expected_lr)
    # a run killed after epoch 1, then resumed, ends where the uninterrupted run ended
    train_run(new_model(data, "released_gate", 0), data, train_config("tiny", epochs=1, lr=1e-3),
              tmp_path / "b", progress=False)
    resumed = train_run(new_model(data, "released_gate", 5), data, cfg, tmp_path / "b",
                        progress=False)
    pd.testing.assert_frame_equal(resumed.history, whole.history)
    np.testing.assert_allclose(resumed.predictions["pred"], whole.predictions["pred"],
                               rtol=1e-5)
    assert resumed.best_epoch == whole.best_epoch
    # the selected epoch is the best val SRCC + PLCC
    score = whole.history["val_srcc"] + whole.history["val_plcc"]
    assert whole.best_epoch == int(whole.history["epoch"][score.idxmax()])
    # a finished run read again (a rerun notebook) reports the time training took, not the
    # time of reading it: the state keeps the wall time of its epochs
    from agiqa_lib.core.checkpoints import read_checkpoint

    saved = float(read_checkpoint(tmp_path / "a" / "last.safetensors")[1]["seconds"])
    assert 0 < saved <= whole.seconds
    again = train_run(new_model(data, "released_gate", 0), data, cfg, tmp_path / "a",
                      progress=False)
    assert again.seconds > saved
    pd.testing.assert_frame_equal(again.history, whole.history)


@pytest.mark.parametrize("mode", ["off", "text", "summary"])
def test_training_batch_order_is_the_seeded_loader_order_in_every_progress_mode(
        mode, monkeypatch):
    """Each epoch draws its batches from one DataLoader seeded with seed * 1000 + epoch, and
    nothing else draws from that generator. (Until 4277694 the loop wrapped the loader in
    `tqdm.auto`, whose asyncio class calls `iter(loader)` in its constructor: one discarded
    iterator took a base seed from the generator first and shifted every epoch's order.)"""
    from agiqa_lib.ma_agiqa.data import MAItems

    monkeypatch.setenv("AGIQA_PROGRESS", mode)
    data = _synthetic()
    cfg = train_config("tiny", epochs=2, lr=1e-3)
    drawn: list[int] = []
    original = MAItems.__getitem__

    def recording(self, i):
        if self.augmentation is not None:  # training items only
            drawn.append(int(i))
        return original(self, i)

    monkeypatch.setattr(MAItems, "__getitem__", recording)
    train_run(new_model(data, "released_gate", 0), data, cfg, progress=mode != "off")
    n = len(data.rows("train"))
    expected = []
    for epoch in range(cfg.epochs):
        loader = torch.utils.data.DataLoader(
            range(n), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        expected += [int(i) for batch in loader for i in batch]
    assert drawn == expected
    # the order before 4277694: the same generator after one more base-seed draw
    g = torch.Generator().manual_seed(cfg.seed * 1000)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    assert drawn[:n // cfg.batch_size * cfg.batch_size] != torch.randperm(n, generator=g)[
        :n // cfg.batch_size * cfg.batch_size].tolist()


def test_run_metrics_predictions_and_result_records(tmp_path):
    data = _synthetic()
    run = train_run(new_model(data, "softmax_gate", 1), data, train_config("tiny", epochs=1),
                    progress=False)
    assert set(run.metrics) == {"all_test", "as_released_drop_last"}
    assert run.metrics["all_test"]["n"] == 12
    assert run.metrics["as_released_drop_last"]["n"] == 8  # 12 test items, batch 8, drop_last
    gates = run.predictions[["gate_semantic_content", "gate_coherence", "gate_quality"]]
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, rtol=1e-5)
    cfg = MAStudyConfig(dataset="synthetic", protocol="fixed", profile="tiny",
                        out_dir=str(tmp_path))
    recs = records(run, data, cfg)
    assert all(isinstance(r, ResultRecord) for r in recs)
    assert [r.evaluation for r in recs] == ["all_test", "as_released_drop_last"]
    assert recs[0].plcc_logistic == run.metrics["all_test"]["plcc_logistic"]
    assert recs[0].plcc_raw == run.metrics["all_test"]["plcc"]
    assert recs[0].predictions and recs[1].predictions is None
    add_records(recs, tmp_path / "results.jsonl")
    add_records(recs, tmp_path / "results.jsonl")  # re-running replaces, never duplicates
    assert len(read_records(tmp_path / "results.jsonl")) == 2
    table = evaluate([run])
    table = pd.concat([table, table.assign(seed=2, srcc=table["srcc"] + 0.1)])
    summary = seed_summary(table)
    assert len(summary) == 2 and (summary["seeds"] == 2).all()
    assert (summary["srcc_lo"] < summary["srcc"]).all()


def test_maniqa_alone_needs_no_semantic_vectors():
    data = _synthetic()
    data.semantic = None
    run = train_run(new_model(data, "maniqa", 0), data, train_config("tiny", epochs=1),
                    progress=False)
    assert not any(c.startswith("gate_") for c in run.predictions)
    assert run.model.fusion is None


def test_checkpoint_round_trip(tmp_path):
    data = _synthetic()
    model = new_model(data, "released_gate", 3).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, MAAGIQA) and loaded.cfg == model.cfg
    rows = np.arange(6)
    cfg = train_config("tiny")
    np.testing.assert_allclose(predict(loaded, data, rows, cfg)[0],
                               predict(model, data, rows, cfg)[0], rtol=1e-6)
    images = torch.randn(2, 3, 224, 224)
    sem = data.semantic[:2]
    torch.testing.assert_close(loaded(images, sem).score, model(images, sem).score)


def test_config_json_round_trip():
    from agiqa_lib.ma_agiqa.model import MAAGIQAConfig

    for variant in ("maniqa", "released_gate", "semantic_only", "concat_mlp"):
        cfg = ma_agiqa_config("lite", variant, in_channels=512)
        assert MAAGIQAConfig.from_json(cfg.to_json()) == cfg


def test_image_mode_matches_cached_token_mode(tmp_path):
    """`full` trains on images; the frozen profiles on cached tokens: same predictions."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    split = pd.Series(["train"] * 16 + ["val"] * 6 + ["test"] * 8)
    df = pd.DataFrame({"name": [p.split("/")[-1] for p in paths], "path": paths,
                       "mos": rng.uniform(1, 5, 30), "generator": ["g"] * 30})
    semantic = torch.randn(30, 2, 64)
    images = PreparedData("imgs", "tiny", "fixed", df, split, None, semantic, in_channels=64)
    model = new_model(images, "released_gate", 0)
    run = train_run(model, images, train_config("tiny", epochs=1), progress=False)
    assert run.metrics["all_test"]["n"] == 8 and len(run.history) == 1
    transform = model.backbone.transform(False)
    with torch.no_grad():
        tokens = model.tokens(torch.stack([transform(Image.open(p).convert("RGB"))
                                           for p in paths]))
    cached = PreparedData("imgs", "tiny", "fixed", df, split, tokens, semantic, in_channels=64)
    cfg = train_config("tiny")
    rows = np.arange(30)
    np.testing.assert_allclose(predict(model, images, rows, cfg)[0],
                               predict(model, cached, rows, cfg)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_runs_side_by_side_equal_the_same_runs_one_after_another(tmp_path):
    """Two workers of one thread each give every run's history, predictions and weights
    exactly as one-thread runs in this process (the `one_torch_thread` fixture)."""
    data = _synthetic()
    cfg = MAStudyConfig(dataset="synthetic", profile="tiny", variants=("maniqa", "released_gate"),
                        seeds=(20, 21), epochs=2, threads=2, progress=False,
                        out_dir=str(tmp_path / "side"), results_path=str(tmp_path / "s.jsonl"))
    apart = study.run(cfg, data)
    alone = study.run(cfg.replace(parallel_runs=1, out_dir=str(tmp_path / "alone"),
                                  results_path=str(tmp_path / "a.jsonl")), data)
    assert [(r.variant, r.seed) for r in apart.runs] == [
        ("maniqa", 20), ("released_gate", 20), ("maniqa", 21), ("released_gate", 21)]
    for a, b in zip(apart.runs, alone.runs):
        pd.testing.assert_frame_equal(a.history, b.history)
        pd.testing.assert_frame_equal(a.predictions, b.predictions)
        assert a.best_epoch == b.best_epoch
        wa, wb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wb)
    side = read_records(tmp_path / "s.jsonl")
    assert [(r.variant, r.seed, r.srcc) for r in side] == [
        (r.variant, r.seed, r.srcc) for r in read_records(tmp_path / "a.jsonl")]
