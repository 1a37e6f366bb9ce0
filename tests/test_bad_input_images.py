"""Images in every mode PIL can return become correct 8-bit RGB, never a silent all-white image.

Each test writes a real file of one mode into tmp_path, checks that PIL reopens it in that
mode (so the test exercises the mode it names), and asserts the pixel values `open_rgb` gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agiqa_lib.core.io import find_images, open_rgb, to_rgb
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.scoring import collect_images, score_images

SIXTEEN_BIT = np.array([[0, 257, 32896, 65535]])  # 8-bit 0, 1, 128, 255 scaled by 257
GREY_8BIT = [0, 1, 128, 255]


def grey_row(image: Image.Image) -> list[int]:
    """The first row of an RGB image as grey levels, after checking R == G == B."""
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.dtype == np.uint8
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[0, :, 0].tolist()


def write_and_reopen(image: Image.Image, path, mode: str):
    """Save `image` to `path` and check that PIL opens the file in `mode`."""
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    return path


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = write_and_reopen(Image.fromarray(SIXTEEN_BIT.astype(np.uint16)), tmp_path / "g.png",
                            "I;16")
    with Image.open(path) as raw:  # what the old convert("RGB") gave: everything >255 white
        assert grey_row(raw.convert("RGB")) == [0, 255, 255, 255]
    assert grey_row(open_rgb(path)) == GREY_8BIT


def test_16bit_big_endian_tiff(tmp_path):
    image = Image.frombytes("I;16B", (4, 1), SIXTEEN_BIT.astype(">u2").tobytes())
    path = write_and_reopen(image, tmp_path / "g.tif", "I;16B")
    assert grey_row(open_rgb(path)) == GREY_8BIT


@pytest.mark.parametrize("mode, dtype", [("I;16L", "<u2"), ("I;16N", "=u2")])
def test_16bit_in_memory_modes(mode, dtype):
    image = Image.frombytes(mode, (4, 1), SIXTEEN_BIT.astype(dtype).tobytes())
    assert image.mode == mode
    assert grey_row(to_rgb(image)) == GREY_8BIT


def test_32bit_integer_tiff_16bit_range_and_beyond(tmp_path):
    sixteen = np.array([[0, 25700, 65535, -5]], dtype=np.int32)  # negatives become 0
    path = write_and_reopen(Image.fromarray(sixteen), tmp_path / "i16.tif", "I")
    assert grey_row(open_rgb(path)) == [0, 100, 255, 0]
    wide = np.array([[0, 100000, 255000]], dtype=np.int32)  # beyond 16 bit: scaled by the max
    path = write_and_reopen(Image.fromarray(wide), tmp_path / "i32.tif", "I")
    assert grey_row(open_rgb(path)) == [0, 100, 255]


def test_float_tiff_unit_range_and_0_255_range(tmp_path):
    unit = np.array([[0.0, 0.2, 1.0, np.nan]], dtype=np.float32)
    path = write_and_reopen(Image.fromarray(unit), tmp_path / "unit.tif", "F")
    assert grey_row(open_rgb(path)) == [0, 51, 255, 0]
    wide = np.array([[0.0, 100.0, 300.0, -4.0]], dtype=np.float32)
    path = write_and_reopen(Image.fromarray(wide), tmp_path / "wide.tif", "F")
    assert grey_row(open_rgb(path)) == [0, 100, 255, 0]


def test_alpha_is_dropped_as_the_released_code_does(tmp_path):
    """RGBA / LA: the stored colours, alpha ignored (PIL convert('RGB') in both releases)."""
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (200, 100, 50, 255))
    path = write_and_reopen(rgba, tmp_path / "rgba.png", "RGBA")
    assert np.asarray(open_rgb(path)).reshape(-1, 3).tolist() == [[10, 20, 30], [200, 100, 50]]
    path = write_and_reopen(Image.new("LA", (2, 1), (100, 0)), tmp_path / "la.png", "LA")
    assert grey_row(open_rgb(path)) == [100, 100]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency(tmp_path, suffix):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    path = tmp_path / f"p{suffix}"
    image.save(path, transparency=0)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and reopened.info.get("transparency") == 0
    assert np.asarray(open_rgb(path)).reshape(-1, 3).tolist() == [[10, 20, 30], [200, 100, 50]]


def test_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (2, 1), (255, 0, 0, 0))  # pure cyan ink
    cmyk.putpixel((1, 0), (0, 0, 0, 0))               # no ink: white
    tif = write_and_reopen(cmyk, tmp_path / "c.tif", "CMYK")
    assert np.asarray(open_rgb(tif)).reshape(-1, 3).tolist() == [[0, 255, 255], [255, 255, 255]]
    jpg = write_and_reopen(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / "c.jpg", "CMYK")
    np.testing.assert_allclose(np.asarray(open_rgb(jpg))[0, 0], [0, 255, 255], atol=3)


def test_open_rgb_returns_a_loaded_copy(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(path)
    image = open_rgb(path)
    path.unlink()  # the pixels must already be in memory
    assert image.getpixel((2, 1)) == (1, 2, 3)


def test_16bit_image_is_scored_as_grey_not_white(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(folder / "mid.png")

    class MeanScorer:
        checkpoint = "mean"

        def score_images(self, images):
            return np.array([np.asarray(im, dtype=float).mean() for im in images])

    run = score_images(MeanScorer(), [folder], progress=False)
    assert run.scores["score"].tolist() == [128.0]


def test_score_and_folder_dataset_share_one_image_rule(tmp_path):
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    for rel in ["a.png", "sub/b.GIF", ".hidden.png", ".cache/c.png", "sub/._d.jpg"]:
        Image.new("RGB", (4, 4)).save(root / rel, format="PNG")
    (root / "notes.txt").write_text("not an image")
    expected = [root / "a.png", root / "sub" / "b.GIF"]
    assert find_images(root) == expected
    assert collect_images([root]) == expected
    assert load_dataset("folder", root)["path"].tolist() == [str(p) for p in expected]
