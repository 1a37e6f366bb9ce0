"""`agiqa score` with bad options or inputs: exit code 2 and one line, never a traceback or a
silently empty or partly NaN table; skipped files printed once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib.cli import main
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.ma_agiqa.model import create_ma_agiqa, save_checkpoint
from agiqa_lib.scoring import score_images


class ConstantScorer:
    """A stand-in scorer returning `value` for every image."""

    def __init__(self, value: float, checkpoint: str = "stub.safetensors"):
        self.value, self.checkpoint = value, checkpoint

    def score_images(self, images):
        return np.full(len(images), self.value)


@pytest.fixture
def checkpoint(tmp_path):
    """A real tiny MANIQA-only checkpoint, scored without any MLLM."""
    torch.manual_seed(0)
    model = create_ma_agiqa("tiny", "maniqa", pretrained=False)
    return save_checkpoint(model, tmp_path / "ckpt" / "ma_tiny.safetensors")


@pytest.fixture
def folder(tmp_path):
    """Two good images, one broken file, and hidden files the `folder` dataset also skips."""
    root = tmp_path / "imgs"
    (root / ".thumbs").mkdir(parents=True)
    Image.new("RGB", (32, 24), (200, 30, 30)).save(root / "a.png")
    Image.new("L", (24, 32), 90).save(root / "b.jpg")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "._a.png").write_bytes(b"macOS resource fork, not an image")
    Image.new("RGB", (8, 8)).save(root / ".thumbs" / "a.png")
    return root


def run_cli(capsys, *argv):
    code = main(["score", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_skipped_file_printed_once_and_hidden_files_not_read(tmp_path, capsys, checkpoint,
                                                             folder, recwarn):
    output = tmp_path / "scores.csv"
    code, out, err = run_cli(capsys, folder, "--checkpoint", checkpoint, "-o", output)
    assert code == 0 and "scored 2 images" in out
    assert len([line for line in err.splitlines() if "broken.png" in line]) == 1
    assert "._a.png" not in err + out
    assert not [w for w in recwarn if "broken.png" in str(w.message)]  # not warned as well
    lines = output.read_text().splitlines()
    assert lines[0] == "path,score" and len(lines) == 3
    assert [line.split(",")[0] for line in lines[1:]] == [str(folder / "a.png"), str(folder / "b.jpg")]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_must_be_positive(tmp_path, capsys, checkpoint, folder, value):
    code, _, err = run_cli(capsys, folder, "--checkpoint", checkpoint, "--batch-size", value,
                           "-o", tmp_path / "s.csv")
    assert code == 2
    assert f"batch size must be a whole number of images >= 1, got {value}" in err
    assert not (tmp_path / "s.csv").exists()


def test_library_refuses_zero_batch_size(folder):
    with pytest.raises(AgiqaError, match="batch size must be a whole number"):
        score_images(ConstantScorer(1.0), [folder], batch_size=0, progress=False)


def test_output_pointing_at_a_folder(tmp_path, capsys, checkpoint, folder):
    target = tmp_path / "results"
    target.mkdir()
    code, _, err = run_cli(capsys, folder, "--checkpoint", checkpoint, "-o", target)
    assert code == 2
    assert f"-o/--output {target} is a folder; pass a file path such as {target / 'scores.csv'}" in err
    assert list(target.iterdir()) == []


def test_folder_with_no_readable_image(tmp_path, capsys, checkpoint):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"")
    (bad / "y.png").write_bytes(b"\x89PNG truncated")
    code, _, err = run_cli(capsys, bad, "--checkpoint", checkpoint, "-o", tmp_path / "s.csv")
    assert code == 2
    assert "none of the 2 image file(s) could be read; the first: cannot read image " in err
    assert "x.jpg" in err
    assert not (tmp_path / "s.csv").exists()


def test_folder_with_only_hidden_or_non_image_files(tmp_path, capsys, checkpoint):
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    Image.new("RGB", (8, 8)).save(empty / ".hidden.png")
    code, _, err = run_cli(capsys, empty, "--checkpoint", checkpoint, "-o", tmp_path / "s.csv")
    assert code == 2
    assert f"no image files in {empty}" in err and "hidden files and folders are skipped" in err


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_predictions_are_an_error_naming_the_checkpoint(folder, value):
    with pytest.raises(AgiqaError, match=r"checkpoint stub.safetensors predicted NaN/inf for 2 of 2 "
                                         r"image\(s\) \(first: .*a.png\)"):
        score_images(ConstantScorer(value), [folder], progress=False, warn=False)


def test_nan_predictions_exit_2_in_the_cli(tmp_path, capsys, checkpoint, folder, monkeypatch):
    import agiqa_lib.scoring

    monkeypatch.setattr(agiqa_lib.scoring, "load_scorer",
                        lambda path, device: ConstantScorer(float("nan"), str(path)))
    code, _, err = run_cli(capsys, folder, "--checkpoint", checkpoint, "-o", tmp_path / "s.csv")
    assert code == 2 and f"checkpoint {checkpoint} predicted NaN/inf" in err
    assert not (tmp_path / "s.csv").exists()


def test_pickle_as_checkpoint_in_the_cli(tmp_path, capsys, folder):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, path)
    code, _, err = run_cli(capsys, folder, "--checkpoint", path, "-o", tmp_path / "s.csv")
    assert code == 2
    assert "this is a pickled PyTorch file, not safetensors; it is not opened for safety" in err
