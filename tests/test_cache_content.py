"""Issue 12, cache items: inputs keyed by content, shards verified on reuse, hand-edited manifests.

Every input is built in a temp folder. Images are uncompressed BMPs, so that one can be replaced
by a different image of exactly the same size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_lib.core import content_key
from agiqa_lib.core.cache import CacheKey
from agiqa_lib.core.content_key import file_list_hash
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.features import extract_features, open_store

KEY = CacheKey(dataset="unit", model_id="mean-rgb", profile="tiny", transform="to_tensor")


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


class CountingEncoder:
    """Channel means [B, 3]; counts the images it saw."""

    def __init__(self):
        self.images = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return x.mean(dim=(2, 3))


def write_bmp(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, format="BMP")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A cache per test: the same image bytes in another test would share its entries."""
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(6):
        write_bmp(folder / f"img_{i}.bmp", seed=i)
        paths.append(str(folder / f"img_{i}.bmp"))
    return paths


def extract(paths, encoder=None):
    return extract_features(paths, encoder or CountingEncoder(), to_tensor, KEY, shard_size=2,
                            progress=False)


def means(paths) -> torch.Tensor:
    return torch.stack([to_tensor(Image.open(p).convert("RGB")).mean(dim=(1, 2)) for p in paths])


def replace_keeping_mtime(path: str, data: bytes) -> None:
    """Overwrite a file in place with same-size bytes and put its old times back."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_same_size_replaced_image_is_recomputed(images, tmp_path):
    stale = extract(images)
    other = tmp_path / "other.bmp"
    write_bmp(other, seed=99)
    replace_keeping_mtime(images[3], other.read_bytes())  # same name, size and mtime
    enc = CountingEncoder()
    fresh = extract(images, enc)
    assert enc.images == len(images)  # another content key: a new entry
    torch.testing.assert_close(fresh, means(images))
    assert not torch.allclose(fresh[3], stale[3])


def test_replaced_by_unreadable_file_names_it(images):
    extract(images)
    replace_keeping_mtime(images[2], b"x" * os.path.getsize(images[2]))
    with pytest.raises(AgiqaError, match=r"cannot read image .*img_2\.bmp"):
        extract(images)


def test_touched_copied_or_renamed_files_reuse_the_cache(images, tmp_path, monkeypatch):
    first = extract(images)
    os.utime(images[0])  # new mtime, same bytes: hashed again, same key
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "imgs", copy)
    renamed = [str(copy / f"renamed_{i}.bmp") for i in range(len(images))]
    for i, path in enumerate(renamed):
        os.rename(copy / f"img_{i}.bmp", path)
    for paths in (images, renamed):
        enc = CountingEncoder()
        torch.testing.assert_close(extract(paths, enc), first)
        assert enc.images == 0
    assert open_store(images[::-1], KEY).path != open_store(images, KEY).path  # order matters


def test_unchanged_files_are_only_stat_ed(images, monkeypatch):
    reads = []
    real = content_key.sha256_file
    monkeypatch.setattr(content_key, "sha256_file", lambda path: reads.append(path) or real(path))
    key = file_list_hash(images)
    assert len(reads) == len(images)
    assert file_list_hash(images) == key and len(reads) == len(images)
    os.utime(images[4])
    assert file_list_hash(images) == key and reads[-1] == images[4]
    assert len(reads) == len(images) + 1


def test_broken_hash_index_is_logged_and_rebuilt(images, tmp_path, caplog):
    index = tmp_path / "index.json"
    key = file_list_hash(images, index=index)
    index.write_text('{"files": [1, 2')
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        assert file_list_hash(images, index=index) == key
    assert "is unusable" in caplog.text
    index.write_text(json.dumps({"files": {os.path.abspath(images[0]): 7}}))  # wrong type
    assert file_list_hash(images, index=index) == key
    assert json.loads(index.read_text())["files"][os.path.abspath(images[0])][4] != 7


def _edits():
    """Hand edits of a manifest: each must be logged and rebuilt, never trusted."""
    def shards_as_list(m):
        m["shards"] = list(m["shards"].values())

    def bytes_as_text(m):
        m["shards"]["0"]["bytes"] = str(m["shards"]["0"]["bytes"])

    def shape_as_text(m):
        m["item_shape"] = "3"

    def identity_missing(m):
        del m["identity"]

    def checksum_missing(m):
        del m["shards"]["1"]["sha256"]

    def layout_as_float(m):
        m["shard_size"] = 2.0

    def not_an_object(m):
        return [m]

    return [shards_as_list, bytes_as_text, shape_as_text, identity_missing, checksum_missing,
            layout_as_float, not_an_object]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_hand_edited_manifest_is_logged_and_rebuilt(images, caplog, edit):
    expected = extract(images)
    path = open_store(images, KEY).path / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(edit(manifest) or manifest))
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        torch.testing.assert_close(extract(images, enc), expected)
    assert enc.images == len(images)
    assert "is rebuilt: manifest malformed" in caplog.text


def test_manifest_that_is_not_json_is_logged_and_rebuilt(images, caplog):
    extract(images)
    (open_store(images, KEY).path / "manifest.json").write_bytes(b"\xff{not json")
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        extract(images, enc)
    assert enc.images == len(images) and "manifest unreadable" in caplog.text


# --------------------------------------------------------------------------- agiqa extract


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "dataset"
    root.mkdir()
    for i in range(6):
        write_bmp(root / f"{i}.bmp", seed=i)
    return root


def _extract_cli(folder, capsys, *extra) -> tuple[str, str]:
    from agiqa_lib.cli import main

    code = main(["extract", "folder", "--root", str(folder), "--profile", "tiny",
                 "--batch-size", "3", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def test_cli_extract_verifies_before_saying_already_cached(folder, capsys, caplog,
                                                           one_torch_thread):
    out, _ = _extract_cli(folder, capsys)
    store = out.rsplit("cache ", 1)[1].strip()
    assert "6 images in" in out
    assert "already cached, checksums verified in" in _extract_cli(folder, capsys)[0]
    shard = os.path.join(store, "shard_00000.safetensors")
    data = bytearray(open(shard, "rb").read())
    data[-1] ^= 0x01  # flip one bit of a stored value: same size, valid header
    open(shard, "wb").write(bytes(data))
    assert "already cached, checksums not verified" in _extract_cli(folder, capsys,
                                                                    "--no-verify")[0]
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        out, err = _extract_cli(folder, capsys)
    assert "6 images in" in out and "already cached" not in out and "Traceback" not in err
    assert "shard 0 is recomputed: checksum differs" in caplog.text


def test_cli_extract_rebuilds_a_hand_edited_manifest(folder, capsys, caplog, one_torch_thread):
    out, _ = _extract_cli(folder, capsys)
    manifest = os.path.join(out.rsplit("cache ", 1)[1].strip(), "manifest.json")
    data = json.loads(open(manifest).read())
    data["item_shape"] = {"width": 8}
    open(manifest, "w").write(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        out, err = _extract_cli(folder, capsys)
    assert "6 images in" in out and "Traceback" not in err
    assert "manifest malformed: field 'item_shape'" in caplog.text
