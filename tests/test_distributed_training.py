"""Data-parallel training: 2 CPU processes (gloo, DDP through accelerate) train one epoch of
MA-AGIQA and of CLIP-AGIQA (cached and fresh views) with the loss and the trainable weights of
a single-process run with the same global batch (8 / 32), to float tolerance; every test image
is scored exactly once; the training state written by rank 0 resumes on every rank.

Dropout and drop-path are set to 0 here: their masks are drawn per process for its own rows,
so with them a launched epoch cannot equal a one-process epoch (the batches, their order and
MA-AGIQA's augmentation, seeded per (seed, epoch, row), do match). The launched run also
accumulates 2 micro-batches per process (`ACCELERATE_GRADIENT_ACCUMULATION_STEPS=2`), so a
global batch of 8 is 4 micro-batches of 2 rows. This file is also the launched script
(`__main__` below, run by torchrun); the single-process reference runs in this process with
one torch thread, as the launched processes do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # clip_standin, when run as a script

from clip_standin import standin_model  # noqa: E402

from agiqa_lib.clip_agiqa.train import (ClipFeatures, FreshViews, TrainConfig as ClipTrain,  # noqa: E402
                                        fit_selection_rules)
from agiqa_lib.ma_agiqa import train as ma_train  # noqa: E402
from agiqa_lib.ma_agiqa.config import train_config  # noqa: E402
from agiqa_lib.ma_agiqa.data import PreparedData  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_TEST = 13  # odd: the two ranks score 7 and 6 test images


def ma_data() -> PreparedData:
    """Tiny-profile tokens and semantic vectors; 40 train (5 batches of 8), 8 val, 13 test."""
    n = 40 + 8 + N_TEST
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(n, 64, 16, generator=g)
    semantic = torch.randn(n, 2, 64, generator=g)
    mos = 2.5 + tokens[:, :8].mean((1, 2)) * 3 + semantic[:, 0, :4].mean(1)
    split = pd.Series(["train"] * 40 + ["val"] * 8 + ["test"] * N_TEST)
    df = pd.DataFrame({"name": [f"img{i}.jpg" for i in range(n)], "path": "",
                       "mos": mos.numpy().astype(float),
                       "generator": [f"gen{i % 3}" for i in range(n)]})
    return PreparedData("synthetic", "tiny", "fixed", df, split, tokens.half(), semantic,
                        in_channels=64)


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "drop_prob"):  # timm DropPath
            module.drop_prob = 0.0
    return model


def clip_data(images: Path) -> tuple[ClipFeatures, np.ndarray, pd.Series, FreshViews]:
    """70 stand-in images: cached features (test view + 2 views) and the fresh-view path."""
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(3)
    paths = []
    for i in range(70):
        path = images / f"{i}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    clip = standin_model().clip
    fixed = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    augment = transforms.Compose([transforms.RandomResizedCrop(16, scale=(0.3, 1.0)),
                                  transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    from agiqa_lib.core.io import open_rgb

    with torch.no_grad():
        test = clip.encode_image(torch.stack([fixed(open_rgb(p)) for p in paths]))
        views = torch.stack([clip.encode_image(torch.stack([augment(open_rgb(p)) for p in paths]))
                             for _ in range(2)])
    w = torch.linspace(-1, 1, test.shape[1])
    mos = (torch.nn.functional.normalize(test, dim=-1) @ w).numpy() * 2 + 2.5
    split = pd.Series(["train"] * 64 + ["test"] * 6)
    fresh = FreshViews(paths, augment, lambda x: clip.encode_image(x))
    return ClipFeatures(test, views), mos.astype(float), split, fresh


def run_all(out: Path, images: Path) -> None:
    """What the launched processes and the single-process reference both run; rank 0 (or the
    single process) saves the results under `out`."""
    from agiqa_lib.core import distributed

    group = distributed.current("cpu")
    results: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {}
    # MA-AGIQA: one epoch, then resumed from the saved state to a second epoch
    data = ma_data()
    scored: list[list[int]] = []
    predict = ma_train.predict

    def logged(model, data_, rows, cfg, progress=False):
        scored.append([int(r) for r in rows])
        return predict(model, data_, rows, cfg, progress)

    ma_train.predict = logged
    try:
        for epochs in (1, 2):
            model = no_dropout(ma_train.new_model(data, "released_gate", 20))
            cfg = train_config("tiny", epochs=epochs, device="cpu")
            scored.clear()
            run = ma_train.train_run(model, data, cfg, run_dir=out / "ma_run", progress=False)
            tag = f"ma{epochs}"
            meta[f"{tag}_history"] = run.history.to_dict("list")
            meta[f"{tag}_scored_rank{group.rank}"] = scored[-1]  # the test call
            results[f"{tag}_pred"] = run.predictions["pred"].to_numpy()
            results.update({f"{tag}/{k}": v.numpy() for k, v in model.state_dict().items()
                            if not k.startswith("backbone.")})
    finally:
        ma_train.predict = predict
    # CLIP-AGIQA: cached views and fresh views, two selection runs each
    features, mos, split, fresh = clip_data(images)
    for kind, views in (("cached", None), ("fresh", fresh)):
        run = fit_selection_rules(lambda: standin_model(dropout=0.0), features, mos, split,
                                  ClipTrain(epochs=1, warmup_epochs=0, checkpoint_every=1),
                                  progress=False,
                                  checkpoint_dir=out / f"clip_{kind}", fresh=views)
        for rule, pred in run.predictions.items():
            results[f"clip_{kind}_pred_{rule}"] = pred
        for rule, state in run.states.items():
            results.update({f"clip_{kind}/{rule}/{k}": v.numpy() for k, v in state.items()})
        meta[f"clip_{kind}_history"] = {k: h.to_dict("list") for k, h in run.histories.items()}
    gathered = group.all_gather(meta)
    if group.is_main:
        merged = {k: v for part in gathered for k, v in part.items()}
        (out / "meta.json").write_text(json.dumps(merged))
        np.savez(out / "results.npz", **results)


@pytest.fixture(scope="module")
def launched_and_single(tmp_path_factory):
    """One launched run (2 processes) and the single-process reference, shared by the tests."""
    tmp_path = tmp_path_factory.mktemp("distributed_training")
    images = tmp_path / "images"
    images.mkdir()
    launched, single = tmp_path / "launched", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AGIQA_PROGRESS": "off",
           "AGIQA_CACHE_DIR": str(tmp_path / "cache"),
           "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "2"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", __file__, str(launched), str(images)]
    clip_data(images)  # the images exist before either run reads them
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    single.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1)
    try:
        run_all(single, images)
    finally:
        torch.set_num_threads(threads)
    return launched, single


def _load(folder: Path):
    with np.load(folder / "results.npz") as npz:
        arrays = dict(npz)
    return arrays, json.loads((folder / "meta.json").read_text())


def test_two_processes_match_one_process(launched_and_single):
    launched, single = launched_and_single
    (got, got_meta), (ref, ref_meta) = _load(launched), _load(single)
    assert sorted(got) == sorted(ref)
    # trainable weights and predictions; the launched gradients are sums in another order, and
    # Adam's per-element normalisation turns such rounding into update differences of a few
    # 1e-6 (lr 1e-3: 0.1 % of one step), hence atol 1e-5
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for tag in ("ma1", "ma2"):
        hist_got, hist_ref = got_meta[f"{tag}_history"], ref_meta[f"{tag}_history"]
        assert len(hist_ref["epoch"]) == int(tag[-1])  # ma2 resumed after epoch 1
        for column in ("train_loss", "train_srcc", "val_srcc", "val_plcc", "lr"):
            np.testing.assert_allclose(hist_got[column], hist_ref[column], rtol=1e-4,
                                       err_msg=f"{tag} {column}")
    for kind in ("cached", "fresh"):
        for run, hist in ref_meta[f"clip_{kind}_history"].items():
            other = got_meta[f"clip_{kind}_history"][run]
            assert hist["lr"] == [0.002]  # no warm-up: the epoch moves the weights
            for column in ("train_loss", "test_srcc", "test_mse"):
                np.testing.assert_allclose(other[column], hist[column], rtol=1e-4,
                                           err_msg=f"{kind} {run} {column}")
    # the resumed launched run read the state rank 0 wrote
    assert (launched / "ma_run" / "last.safetensors").is_file()
    assert sorted(p.name for p in (launched / "clip_cached").iterdir()) == \
        ["train.safetensors", "train_minus_val.safetensors"]


def test_every_test_image_scored_exactly_once(launched_and_single):
    launched, single = launched_and_single
    meta = _load(launched)[1]
    test_rows = list(range(48, 48 + N_TEST))
    for tag in ("ma1", "ma2"):
        shards = [meta[f"{tag}_scored_rank{r}"] for r in (0, 1)]
        assert [len(s) for s in shards] == [7, 6]
        assert shards[0] + shards[1] == test_rows  # each once, in row order, no padding
    assert _load(single)[1]["ma1_scored_rank0"] == test_rows
    assert len(_load(launched)[0]["ma1_pred"]) == N_TEST


def test_accumulation_in_one_process_matches(monkeypatch, tmp_path):
    """Two micro-batches per batch in a single process give the plain run's epoch."""
    data = ma_data()
    outs = []
    for steps in ("1", "2"):
        monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", steps)
        model = no_dropout(ma_train.new_model(data, "maniqa", 20))
        run = ma_train.train_run(model, data, train_config("tiny", epochs=1, device="cpu"),
                                 progress=False)
        outs.append((run.history["train_loss"].iloc[0], model.maniqa.state_dict()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-5)
    for key, value in outs[0][1].items():
        mask = _with_a_gradient(key, value)
        torch.testing.assert_close(outs[1][1][key][mask], value[mask], rtol=1e-4, atol=1e-5)


def _with_a_gradient(key: str, value: torch.Tensor) -> torch.Tensor:
    """Entries whose gradient is not zero in exact arithmetic. An attention key bias adds the
    same q.b to every score of a query row, which the softmax removes: its gradient is float
    noise, which Adam turns into steps of up to lr whose signs depend on the CPU's summation
    order, so two exact equivalents (one batch, two micro-batches) may move it apart."""
    mask = torch.ones_like(value, dtype=torch.bool)
    if key.endswith("c_k.bias"):  # TABlock keys
        mask[:] = False
    elif key.endswith("attn.qkv.bias"):  # Swin: [q | k | v] biases
        third = value.shape[0] // 3
        mask[third:2 * third] = False
    return mask


if __name__ == "__main__":  # the launched processes of `launched_and_single`
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    target, image_dir = map(Path, sys.argv[1:3])
    target.mkdir(exist_ok=True)
    run_all(target, image_dir)
    from agiqa_lib.core import distributed

    distributed.close()
