"""Atomic writes: a failed write leaves nothing behind, a finished one appears in one step."""

from __future__ import annotations

import pytest

from agiqa_lib.core.io import atomic_folder, atomic_path


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target) as staging:
        assert not target.exists()
        (staging / "config.json").write_text("{}")
    assert (target / "config.json").read_text() == "{}"


def test_atomic_folder_keeps_a_concurrent_builders_copy(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("mine")
        target.mkdir()  # another process finished first
        (target / "weights").write_text("theirs")
    assert (target / "weights").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
