"""Tensor files and bytes as safetensors (no pickle involved), written atomically.

Kept apart from `core.io` so that the steps that never touch a tensor (notebook 01, data
exploration, and notebook 05, results) do not pay torch's import (about 4 s on a 2-core CPU).
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file
from safetensors.torch import save as save_bytes

from agiqa_lib.core.io import atomic_path


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    with atomic_path(path) as tmp:
        save_file(_cpu_contiguous(tensors), str(tmp), metadata=metadata)


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """A dict of tensors as safetensors bytes (e.g. weights sent back by a worker process)."""
    return save_bytes(_cpu_contiguous(tensors))


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The dict of tensors of `tensors_to_bytes` (no pickle involved)."""
    return load_bytes(data)


def _cpu_contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU (no pickle involved)."""
    return load_file(str(path), device="cpu")
