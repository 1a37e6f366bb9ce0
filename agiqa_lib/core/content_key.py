"""Content keys of input files: a feature cache entry is valid only for the exact bytes it saw.

`file_list_hash` hashes every file's bytes once and remembers the digest under the file's
(size, mtime_ns, ctime_ns, inode) in a small index, so later calls only stat the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import atomic_path, exclusive_lock, read_json, sha256_file
from agiqa_lib.core.paths import cache_dir
from agiqa_lib.core.progress import progress_bar

log = logging.getLogger(__name__)

HASH_INDEX = "file_hashes.json"


def file_list_hash(paths: Sequence[str | os.PathLike],
                   index: str | os.PathLike | None = None) -> str:
    """Content key of an ordered list of files: SHA-256 over the SHA-256 of each file's bytes.

    Any byte change of any file changes the key, a same-size replacement included. Names do not
    enter it: the features of row i depend only on the bytes of file i and on i, so a moved,
    copied or renamed dataset reuses its features. Digests are remembered in `index` (default
    `cache_dir()/file_hashes.json`) under the absolute path with the file's (size, mtime_ns,
    ctime_ns, inode): an unchanged file is only stat-ed; any change of these (replacing a file
    sets a new ctime even when its mtime is copied) has it read and hashed again, and a touched
    file with the same bytes keeps its digest, so its features stay valid. (Not seen: a rewrite
    to the same size within one tick of the file system's clock after the file was hashed.) A
    file that is missing or cannot be read raises AgiqaError naming it.
    """
    if not paths:
        raise AgiqaError("no files given to the feature cache: the dataset has no images.")
    index_path = Path(index) if index is not None else cache_dir() / HASH_INDEX
    known = _read_hash_index(index_path)
    digests: list[str] = []
    todo: list[tuple[int, str, list[int]]] = []
    for i, name in enumerate(paths):
        path = os.path.abspath(name)
        try:
            st = os.stat(path)
        except OSError:
            raise AgiqaError(f"image file not found or unreadable: {path}; check the dataset "
                             "root or regenerate the dataset.") from None
        signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = known.get(path)
        valid = isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], str)
        digests.append(entry[4] if valid and entry[:4] == signature else "")
        if not digests[-1]:
            todo.append((i, path, signature))
    fresh = {}
    for i, path, signature in progress_bar(todo, desc="hashing input files", unit="file",
                                           disable=len(todo) < 1000):
        try:
            digests[i] = sha256_file(path)
        except OSError as err:
            raise AgiqaError(f"cannot read {path} ({err.strerror}); check its permissions or "
                             "replace the file.") from None
        fresh[path] = [*signature, digests[i]]
    if fresh:
        with exclusive_lock(index_path.with_name(index_path.name + ".lock"),
                        f"waiting for another process updating {index_path}"):
            merged = {**_read_hash_index(index_path), **fresh}
            with atomic_path(index_path) as tmp:  # compact: parsed on every call
                tmp.write_text(json.dumps({"format": 1, "files": merged}, separators=(",", ":")))
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _read_hash_index(path: Path) -> dict[str, Any]:
    """The remembered file digests; an unreadable or malformed index is logged and ignored."""
    if not path.exists():
        return {}
    try:
        files = read_json(path)["files"]
        if isinstance(files, dict):
            return files
        problem = "'files' is not an object"
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
    log.warning("file-hash index %s is unusable (%s); the files are hashed again", path, problem)
    return {}
