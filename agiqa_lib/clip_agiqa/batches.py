"""Training batches of CLIP-AGIQA: cached augmented views, or fresh views encoded at every step.

- fresh views (`ImageBatches`; the release and the `full` default): every epoch each training
  image is loaded and gets a new RandomResizedCrop(224, scale 0.08-1, bicubic) + horizontal
  flip (Dassl's `transforms.py:234-239`, `defaults.py:40`), and the frozen image encoder runs
  on it under no_grad on the study's device. View randomness is seeded per (seed, epoch,
  image), so a resumed run, or one with another number of loader workers, sees the same views.
- cached views (`CachedFeatureBatches`; the speed option and the `lite`/`tiny` default): the
  features of K augmented views per image are cached once, and each epoch draws one of them
  per image.

Both shuffle with a generator seeded from (seed, epoch) and drop the last partial batch
(Dassl's train loader; fewer rows than a batch make one batch); `sharded_epoch` gives a
launched run's process its micro-batches of the same batches (`core.distributed.DataParallel`).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from agiqa_lib.core.features import item_seed
from agiqa_lib.core.io import open_rgb


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles (and picks the views of) one epoch."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class CachedFeatureBatches:
    """Training batches from cached features: per epoch, one of K augmented views per image."""

    kind = "cached"

    def __init__(self, views: torch.Tensor, mos: Sequence[float], batch_size: int = 32,
                 seed: int = 0) -> None:
        if views.dim() == 2:
            views = views.unsqueeze(0)  # a single (e.g. un-augmented) view
        if views.shape[1] != len(mos):
            raise ValueError(f"features have {views.shape[1]} images but mos has {len(mos)}")
        self.views = views  # [K, N, D]
        self.mos = torch.as_tensor(np.asarray(mos, dtype=np.float32))
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        n = self.mos.shape[0]
        return n // self.batch_size if n >= self.batch_size else 1

    def index_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (image indices [B], their view indices [B]) of each batch of an epoch."""
        gen = _epoch_generator(self.seed, epoch)
        n, k = self.mos.shape[0], self.views.shape[0]
        order = torch.randperm(n, generator=gen)
        view = torch.randint(k, (n,), generator=gen)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield idx, view[idx]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (image features [B, D], mos [B]) in a shuffled order fixed by (seed, epoch)."""
        for idx, view in self.index_batches(epoch):
            yield self.views[view, idx].float(), self.mos[idx]

    def sharded_epoch(self, epoch: int, parts: Callable[[int], list[np.ndarray]]
                      ) -> Iterator[tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """Yield, per batch of `epoch`, (its size n, this process's micro-batches): `parts(n)`
        gives the positions of each micro-batch in the batch (`core.distributed.DataParallel`)."""
        for idx, view in self.index_batches(epoch):
            yield len(idx), [(self.views[view[p], idx[p]].float(), self.mos[idx[p]])
                             for p in map(torch.as_tensor, parts(len(idx)))]


class ImageBatches:
    """Fresh views: load, augment and encode the images at every step (no cache).

    Batches are shuffled by a generator seeded from (seed, epoch), the last partial batch is
    dropped (Dassl's train loader); the random view of image `ids[i]` in epoch e is seeded by
    `core.features.item_seed(seed, "fresh{e}", ids[i])`, whatever the worker or batch. `encode`
    maps a batch on `device` to features; it runs under no_grad (the encoder is frozen).
    """

    kind = "fresh"

    def __init__(self, paths: Sequence[str], mos: Sequence[float], transform: Callable,
                 encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 32,
                 seed: int = 0, num_workers: int = 0, device: str | torch.device = "cpu",
                 ids: Sequence[int] | None = None) -> None:
        ids = list(range(len(paths))) if ids is None else [int(i) for i in ids]
        self.dataset = _ImageDataset(list(paths), np.asarray(mos, dtype=np.float32), transform,
                                     ids, seed)
        self.encode, self.batch_size = encode, batch_size
        self.seed, self.num_workers, self.device = seed, num_workers, torch.device(device)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if n >= self.batch_size else 1

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (image features [B, D] on `device`, mos [B]) for one epoch of fresh views."""
        self.dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=True,
            drop_last=len(self.dataset) >= self.batch_size, num_workers=self.num_workers,
            generator=_epoch_generator(self.seed, epoch),
            pin_memory=self.device.type == "cuda")
        for images, mos in loader:
            with torch.no_grad():
                features = self.encode(images.to(self.device, non_blocking=True))
            yield features, mos

    def sharded_epoch(self, epoch: int, parts: Callable[[int], list[np.ndarray]]
                      ) -> Iterator[tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """Like `CachedFeatureBatches.sharded_epoch`: the batches of `epoch` (the order of
        `epoch`'s loader), of which this process loads, augments and encodes only its own
        micro-batches."""
        self.dataset.epoch = epoch
        n = len(self.dataset)
        order = torch.utils.data.DataLoader(  # the index batches `epoch`'s loader draws
            range(n), batch_size=self.batch_size, shuffle=True,
            drop_last=n >= self.batch_size, generator=_epoch_generator(self.seed, epoch))
        plan = [(len(batch), [batch[p].tolist() for p in parts(len(batch))]) for batch in order]
        loader = iter(torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[m for _, micro in plan for m in micro],
            num_workers=self.num_workers, generator=torch.Generator(),
            pin_memory=self.device.type == "cuda"))
        for size, micro in plan:
            out = []
            for _ in micro:
                images, mos = next(loader)
                with torch.no_grad():
                    out.append((self.encode(images.to(self.device, non_blocking=True)), mos))
            yield size, out


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], mos: np.ndarray, transform: Callable,
                 ids: list[int], seed: int) -> None:
        self.paths, self.mos, self.transform = paths, mos, transform
        self.ids, self.seed, self.epoch = ids, seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        image = open_rgb(self.paths[i])
        with torch.random.fork_rng(devices=[]):  # torchvision transforms draw from torch's RNG
            torch.manual_seed(item_seed(self.seed, f"fresh{self.epoch}", self.ids[i]))
            return self.transform(image), float(self.mos[i])
