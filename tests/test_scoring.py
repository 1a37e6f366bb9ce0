"""`agiqa score` plumbing: folder expansion, mixed formats, bad files, checkpoint dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib.core.checkpoints import read_metadata
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.tensor_io import save_tensors
from agiqa_lib.scoring import collect_images, load_scorer, score_images


class BrightnessScorer:
    """A transparent test scorer: mean pixel value of each image."""

    def __init__(self):
        self.batches = []

    def score_images(self, images):
        self.batches.append(len(images))
        return np.array([np.asarray(im, dtype=float).mean() for im in images])


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, ext in enumerate(["png", "jpg", "webp", "bmp", "JPEG"]):
        Image.new("RGB", (20, 16), (10 * i, 0, 0)).save(folder / f"im{i}.{ext}")
    Image.new("L", (8, 8), 200).save(folder / "sub" / "gray.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return folder


def test_folder_of_mixed_formats_is_scored_and_bad_file_skipped(image_folder):
    scorer = BrightnessScorer()
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\): .*broken.jpg"):
        run = score_images(scorer, [image_folder], batch_size=3, progress=False)
    assert len(run.scores) == 6
    assert [p for p, _ in run.skipped] == [str(image_folder / "broken.jpg")]
    assert not run.scores["path"].str.endswith(".txt").any()
    gray = run.scores.loc[run.scores["path"].str.endswith("gray.png"), "score"].item()
    assert gray == pytest.approx(200.0)
    assert max(scorer.batches) <= 3


def test_collect_images_rejects_missing_path(tmp_path):
    with pytest.raises(AgiqaError, match="neither an image file nor a folder"):
        collect_images([tmp_path / "nope"])


def test_checkpoint_without_model_family_is_refused(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"w": torch.zeros(2)}, metadata={"something": "else"})
    assert read_metadata(path) == {"something": "else"}
    with pytest.raises(AgiqaError, match="agiqa_model"):
        load_scorer(path)


def test_non_safetensors_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"garbage, neither safetensors nor a pickle")
    with pytest.raises(AgiqaError, match="not a readable safetensors file"):
        load_scorer(path)
    with pytest.raises(AgiqaError, match="not found"):
        load_scorer(tmp_path / "missing.safetensors")


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    from agiqa_lib.cli import main

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code = main(["score", str(tmp_path), "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
