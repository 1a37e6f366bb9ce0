"""Shared fixtures: offline hub settings, a private cache dir, the real AGIQA-3K root."""

from __future__ import annotations

import os

import pytest

# Tests never reach a hub: set before transformers / open_clip / timm are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test session writes generated data and caches under one temp folder."""
    root = tmp_path_factory.getbasetemp() / "agiqa-cache"
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(root))


@pytest.fixture
def agiqa3k_root():
    """Path of the real AGIQA-3K data (`../shared/data/AGIQA-3K`); skips when absent."""
    from agiqa_lib.core.paths import shared_agiqa3k_root

    root = shared_agiqa3k_root()
    if root is None:
        pytest.skip("real AGIQA-3K data not found at ../shared/data/AGIQA-3K "
                    "(set AGIQA3K_ROOT to its folder to run this test)")
    return root


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread and do not fight other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any socket connection fails, and the hub cache is empty and offline."""
    import socket

    import huggingface_hub.constants  # a submodule: imported explicitly before patching it

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
