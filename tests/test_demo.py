"""The synthetic demo dataset: schema, determinism, caching, atomic generation, learnability."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from agiqa_lib.data.datasets import demo, load_dataset, make_demo_dataset
from agiqa_lib.core.errors import AgiqaError

AGIQA3K_COLUMNS = ["name", "prompt", "adj1", "adj2", "style",
                   "mos_quality", "std_quality", "mos_align", "std_align"]
SMALL = {"n_images": 48, "image_size": 64}


def folder_digest(root: Path) -> str:
    """Hash of data.csv and every image, to compare two generations byte for byte."""
    digest = hashlib.sha256((root / "data.csv").read_bytes())
    for path in sorted((root / "images").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "small", seed=3, **SMALL)


def test_small_demo_schema_and_counts(small_demo):
    raw = (small_demo / "data.csv").read_bytes()
    assert raw.count(b"\r\n") == 49  # AGIQA-3K's CRLF line endings, header + 48 rows
    table = pd.read_csv(small_demo / "data.csv")
    assert list(table.columns) == AGIQA3K_COLUMNS
    df = load_dataset("demo", small_demo)
    assert len(df) == 48 and df["name"].is_unique
    assert df["generator"].nunique() == len(demo.GENERATORS) == 8
    assert df["generator"].str.match(r"demo-\w+_(normal|lowstep|lowcorr)$").all()
    assert df["name"].str.match(r"demo-\w+_(normal|lowstep|lowcorr)_\d{3}\.jpg$").all()
    # every prompt drawn by every generator
    assert df.groupby("prompt")["generator"].nunique().eq(8).all() and df["prompt"].nunique() == 6
    for column in ("mos_quality", "mos_align"):
        assert df[column].between(0, 5).all() and df[column].std() > 0.3
    assert (df[["std_quality", "std_align"]] > 0).all().all()
    assert df["mos"].equals(df["mos_quality"])
    assert load_dataset("demo", small_demo, target="mos_align")["mos"].equals(df["mos_align"])
    for path in df["path"]:
        with Image.open(path) as image:
            image.load()
            assert image.size == (64, 64) and image.mode == "RGB"


def test_prompt_text_matches_columns(small_demo):
    df = load_dataset("demo", small_demo)
    for _, row in df.iterrows():
        for part in (row["adj1"], row["adj2"], row["style"]):
            if part:
                assert part in row["prompt"]
    assert df["prompt"].str.contains(r"(?:circle|square|triangle|star|diamond|hexagon)").all()


def test_demo_is_deterministic_for_a_seed(tmp_path, small_demo):
    again = make_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    assert folder_digest(again) == folder_digest(small_demo)
    other = make_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    assert folder_digest(other) != folder_digest(small_demo)


def test_fewer_prompts_are_a_prefix_of_more(tmp_path, small_demo):
    """A smaller demo holds the first prompts of a larger one with the same seed, byte for byte."""
    fewer = make_demo_dataset(tmp_path / "fewer", seed=3, n_images=32, image_size=64)
    small = pd.read_csv(small_demo / "data.csv").set_index("name")
    part = pd.read_csv(fewer / "data.csv").set_index("name")
    assert len(part) == 32 and part["prompt"].nunique() == 4
    pd.testing.assert_frame_equal(part, small.loc[part.index])
    for name in part.index:
        assert (fewer / "images" / name).read_bytes() == (small_demo / "images" / name).read_bytes()


def test_uneven_count_drops_last_generator_prompts(tmp_path):
    df = load_dataset("demo", make_demo_dataset(tmp_path / "odd", n_images=13, image_size=32))
    assert len(df) == 13
    counts = df["generator"].value_counts()
    assert [counts[g.name] for g in demo.GENERATORS[:7]] == [2, 2, 2, 2, 2, 2, 1]


def test_demo_is_generated_once_then_reused(tmp_path, monkeypatch):
    root = make_demo_dataset(tmp_path / "d", n_images=16, image_size=32)
    before = (root / "data.csv").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete demo dataset")

    monkeypatch.setattr(demo, "_generate", fail)
    assert make_demo_dataset(root, n_images=16, image_size=32) == root
    assert len(load_dataset("demo", root)) == 16
    assert (root / "data.csv").stat().st_mtime_ns == before
    with pytest.raises(AgiqaError, match="already holds a demo dataset made with"):
        make_demo_dataset(root, n_images=17, image_size=32)


def test_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(AgiqaError, match="not an empty folder or a complete demo dataset"):
        make_demo_dataset(tmp_path / "mine", n_images=8, image_size=32)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    with pytest.raises(AgiqaError, match="n_images >= 1 and image_size >= 32"):
        make_demo_dataset(tmp_path / "bad", n_images=0)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_render = demo.render

    def render_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo, "render", render_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_demo_dataset(tmp_path / "d", n_images=16, image_size=32)
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_is_not_reused(tmp_path):
    root = tmp_path / "d"
    code = ("from agiqa_lib.data.datasets import make_demo_dataset; "
            f"make_demo_dataset({str(root)!r}, n_images=4000, image_size=128)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            partial = list(tmp_path.glob(".d.tmp-*/images/*.jpg"))
            if len(partial) >= 5:
                break
            time.sleep(0.1)
        assert partial, "generation never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not root.exists()
    assert list(tmp_path.glob(".d.tmp-*"))  # the half-written folder is left aside...
    fresh = make_demo_dataset(root, n_images=24, image_size=32)
    df = load_dataset("demo", fresh)  # ...and a complete one is made instead
    assert len(df) == 24 and (fresh / demo.MARKER).is_file()


def test_default_demo_from_cache_and_learnable(tmp_path_factory):
    """`load_dataset("demo")` with no root: 512 images, 64 prompts, 256 px, in cache_dir()/demo."""
    started = time.perf_counter()
    df = load_dataset("demo")
    elapsed = time.perf_counter() - started
    root = demo.default_demo_root()
    assert root.parent.name == "demo" and root.name.startswith(f"v{demo.VERSION}-")
    assert Path(df["path"].iloc[0]).is_relative_to(root)
    assert len(df) == demo.DEFAULT_N_IMAGES == 512 and df["prompt"].nunique() == 64
    with Image.open(df["path"].iloc[0]) as image:
        assert image.size == (256, 256)
    assert elapsed < 120, f"default demo took {elapsed:.0f} s"

    # Generator identity explains part of the quality, not all of it.
    generator_mean = df.groupby("generator")["mos_quality"].transform("mean")
    srcc_generator = spearmanr(generator_mean, df["mos_quality"]).statistic
    assert 0.5 < srcc_generator < 0.95
    # Within each generator, the drawn defects still carry signal the MOS reflects.
    latents = pd.read_csv(root / "latents.csv").set_index("name").loc[df["name"]]
    visible = (1 - latents["blur"].clip(upper=3) / 3) * (1 - latents["noise"] / 30) \
        * (1 - (8 - latents["bits"]) / 6 * 0.5) * (1 - ((90 - latents["jpeg"]) / 80).clip(0, 1) * 0.6)
    within = [spearmanr(visible.to_numpy()[idx], df["mos_quality"].to_numpy()[idx]).statistic
              for idx in df.groupby("generator").indices.values()]
    assert np.mean(within) > 0.3
    # Not a deterministic function of the visible defects either (simulated taste and raters).
    assert spearmanr(visible, df["mos_quality"]).statistic < 0.98
