"""Atomic file writes (a killed run never leaves a half-written file to be read) and image reading.

`open_rgb` / `to_rgb` turn every PIL mode into 8-bit RGB without silent clipping, and
`find_images` is the one rule for "which files in a folder are images" (used by the `folder`
dataset and `agiqa score`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from agiqa_lib.core.errors import AgiqaError

log = logging.getLogger(__name__)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; use normal file modes
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_UINT16_MAX = 65535


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under `root` (recursive, sorted), by extension in any case.

    Hidden files and anything inside a hidden folder (a name starting with ".") are skipped,
    so editor backups, `.ipynb_checkpoints` and macOS `._*` files are never read as images.
    """
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, scaling high-bit-depth modes instead of clipping them.

    PIL's own `convert("RGB")` clips every value above 255, so a 16-bit image turns (almost)
    all white. Here:

    - `I;16`, `I;16B`, `I;16L`, `I;16N` (16-bit grey): value / 257, rounded (65535 -> 255).
    - `I` (32-bit signed grey; older Pillow opens 16-bit PNGs in this mode): negatives become
      0; scaled like 16-bit when the maximum is <= 65535, else by the image's own maximum.
    - `F` (32-bit float grey): taken as [0, 1] (x 255) when the maximum is <= 1, else as
      already on the 0-255 scale and clipped to it; NaN becomes 0.
    - `RGBA`, `LA`, `PA` and `P` with a transparent colour: the stored colours with alpha
      dropped, which is what PIL's `convert("RGB")` in both papers' released code gives, so
      the models see such images as they were trained to.
    - `CMYK`, `YCbCr`, `LAB`, `HSV`, `1`, `L`, `P`: PIL's conversion to RGB.

    Always returns a new, loaded image (never `image` itself), so the source file may be closed.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if mode == "F":
            values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
            scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        else:
            values = np.clip(values, 0, None)
            scale = 255.0 / max(_UINT16_MAX, values.max(initial=0.0))
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as an 8-bit RGB PIL image (see `to_rgb`; file closed).

    Any error while decoding or converting (PIL's plugins raise many types for damaged files)
    is an AgiqaError naming the file, so callers can skip it with one except clause.
    """
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except Exception as err:
        raise AgiqaError(f"cannot read image {path} ({type(err).__name__}: {err}); replace or "
                         "remove the file.") from None


@contextmanager
def exclusive_lock(lock_path: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path`; log `waiting` if another process has it."""
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s", waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; on success it becomes `path` in one rename.

    If another process created `path` meanwhile, its copy is kept and the staging folder
    dropped, so concurrent builders of the same folder never see a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        if not path.exists():
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
