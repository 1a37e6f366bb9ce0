"""The shared resumable training scaffold (`core.training.TrainingState`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agiqa_lib.core.training import TrainingState


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    frozen = nn.Linear(4, 4).requires_grad_(False)
    return nn.ModuleDict({"head": model, "frozen": frozen})


def _train(state: TrainingState, epochs: int, path=None, stop_after: int | None = None) -> None:
    """A tiny regression; reseeded per epoch like the real trainers."""
    x_all = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y_all = x_all.sum(1, keepdim=True)
    for epoch in range(state.epochs_done, epochs):
        torch.manual_seed(100 + epoch)
        state.model.train()
        for idx in torch.randperm(64).split(16):
            loss = nn.functional.mse_loss(state.model["head"](x_all[idx]), y_all[idx])
            state.optimizer.zero_grad()
            loss.backward()
            state.optimizer.step()
            state.scheduler.step()
        # a made-up validation score that peaks at epoch 2, to exercise the snapshots
        state.record({"epoch": epoch + 1, "loss": loss.item()}, {"best_on_val": -abs(epoch - 1)})
        if path is not None:
            state.save(path)
        if stop_after is not None and epoch + 1 == stop_after:
            return


def _state(fingerprint: str = "run-a") -> TrainingState:
    model = _model()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=7)
    return TrainingState(model, optimizer, scheduler, fingerprint)


def test_weights_hold_trainable_parameters_and_their_layers_buffers():
    names = set(_state().weights())
    assert "head.1.running_mean" in names and "head.1.num_batches_tracked" in names
    assert "head.0.weight" in names and not any(n.startswith("frozen") for n in names)


def test_killed_run_resumes_to_the_same_weights_history_and_snapshot(tmp_path):
    whole = _state()
    _train(whole, 4)
    path = tmp_path / "last.safetensors"
    _train(_state(), 4, path, stop_after=2)  # killed after epoch 2
    resumed = _state()
    assert resumed.restore(path) and resumed.epochs_done == 2
    _train(resumed, 4, path)
    assert resumed.history == whole.history
    assert resumed.best_epochs() == whole.best_epochs() == {"best_on_val": 2, "last": 4}
    for name, value in whole.weights().items():
        torch.testing.assert_close(resumed.weights()[name], value)
    for name, value in whole.snapshots["best_on_val"].items():
        torch.testing.assert_close(resumed.snapshots["best_on_val"][name], value)
    assert resumed.scheduler.state_dict() == whole.scheduler.state_dict()


def test_the_run_time_is_kept_across_sessions(tmp_path):
    """`seconds` (what a resumed run reports as its training time) is saved and restored; a
    state written before it was kept restores as 0."""
    from agiqa_lib.core.checkpoints import read_checkpoint, write_checkpoint

    path = tmp_path / "last.safetensors"
    state = _state()
    _train(state, 2)
    state.seconds = 123.5
    state.save(path)
    resumed = _state()
    assert resumed.restore(path) and resumed.seconds == 123.5
    tensors, meta = read_checkpoint(path)
    meta.pop("seconds")
    write_checkpoint(path, tensors, meta)
    older = _state()
    assert older.restore(path) and older.epochs_done == 2 and older.seconds == 0.0


def test_another_run_starts_over_and_says_so(tmp_path, caplog):
    path = tmp_path / "last.safetensors"
    _train(_state("run-a"), 2, path)
    other = _state("run-b")
    with caplog.at_level("WARNING"):
        assert not other.restore(path)
    assert other.epochs_done == 0 and "belongs to another run" in caplog.text
    path.write_bytes(b"not a safetensors file")
    assert not _state("run-a").restore(path)


def test_a_failed_save_leaves_the_previous_state_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    state = _state()
    _train(state, 1, path)
    import agiqa_lib.core.tensor_io as tensor_io

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tensor_io, "save_file", broken)
    with pytest.raises(OSError):
        _train(state, 2, path)
    monkeypatch.undo()
    again = _state()
    assert again.restore(path) and again.epochs_done == 1
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left behind


def test_load_weights_refuses_a_snapshot_that_lacks_a_trainable_tensor():
    state = _state()
    partial = dict(state.weights())
    partial.pop("head.0.weight")
    with pytest.raises(KeyError, match="head.0.weight"):
        state.load_weights(partial)
