"""`agiqa extract`: fills the cache per view, reports images/s and the path, clean user errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agiqa_lib.cli import main


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """Twelve small JPEGs in a folder dataset, and a cache of this test's own."""
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    return root


def test_extract_clip_views_then_reuse(folder, capsys):
    args = ["extract", "folder", "--root", str(folder), "--profile", "tiny", "--views", "test,2",
            "--limit", "10", "--batch-size", "4"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["clip test", "clip aug0", "clip aug1"]
    for line in lines:
        assert re.search(r"10 images \(10 images in [\d.]+ s, [\d.]+ images/s\)", line)
        assert "float32" in line
        assert (Path(line.rsplit("cache ", 1)[1]) / "manifest.json").is_file()
    assert main(args) == 0
    assert capsys.readouterr().out.count("already cached") == 3


def test_extract_with_a_protocol_fills_the_entries_the_clip_study_reads(tmp_path, monkeypatch,
                                                                         capsys):
    """`--protocol`: the test view of every image and augmented views of the train rows only,
    into the very entries notebook 02's `study.prepare` then finds complete."""
    from agiqa_lib.clip_agiqa import study
    from agiqa_lib.clip_agiqa.config import ClipStudyConfig
    from agiqa_lib.data.datasets import load_dataset

    monkeypatch.setenv("AGIQA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["extract", "demo", "--profile", "tiny", "--views", "test,2",
                 "--protocol", "clip_agiqa"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    cfg = ClipStudyConfig(dataset="demo", profile="tiny", n_aug_views=2, progress=False)
    n_all = len(load_dataset("demo"))
    data = study.prepare(cfg)
    n_train = len(data.rows("train"))
    assert 0 < n_train < n_all == len(data.df)
    assert [int(re.search(r": (\d+) images", line).group(1)) for line in lines] == \
        [n_all, n_train, n_train]
    assert data.features.augmented.shape[:2] == (2, n_train)
    # prepare found what extract filled: no other feature entry was made
    entries = sorted((tmp_path / "cache" / "features").iterdir())
    assert entries == sorted(Path(line.rsplit("cache ", 1)[1]) for line in lines)


def test_extract_iqa_tokens_fp16(folder, capsys):
    assert main(["extract", "folder", "--root", str(folder), "--profile", "tiny",
                 "--what", "iqa", "--batch-size", "6"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"iqa test: 12 images \(12 images in .* images/s\); "
                     r"item shape \[\d+, 784\] float16", out)


@pytest.mark.parametrize("extra, message", [
    (["--views", "train"], "unknown view 'train'"),
    (["--what", "iqa", "--views", "2"], "--views applies to --what clip only"),
    (["--limit", "0"], "--limit must be a positive"),
    (["--what", "iqa", "--protocol", "clip_agiqa"], "--protocol applies to --what clip only"),
])
def test_bad_options_are_one_line_errors(folder, capsys, extra, message):
    assert main(["extract", "folder", "--root", str(folder), "--profile", "tiny", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_image_names_the_file(folder, capsys):
    (folder / "5.jpg").write_bytes(b"broken")
    assert main(["extract", "folder", "--root", str(folder), "--profile", "tiny"]) == 2
    assert "5.jpg" in capsys.readouterr().err
