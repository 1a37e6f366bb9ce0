"""MA-AGIQA's data side: one dataset ready for training, and the released augmentation.

`prepare_data` loads a dataset, splits it (rows without a score are dropped), and computes
(once, cached) what the model reads: the frozen IQA backbone's tokens for `lite`/`tiny` (for
`full` the images themselves are read at every step, since the ViT is fine-tuned) and the
semantic vectors, from the MLLM or from MA-AGIQA's released `.pt` files
(`semantic_source="official:DIR"`, imported into the semantic cache through
`ma_agiqa.semantic.cache_official_vectors`). `MAItems` serves (input, semantic vectors, MOS,
row) to a DataLoader and applies the released augmentation to training items; with the
released cv2 preprocessing it hands the transform the file path, which it reads as released.

In a launched run (`core.distributed`) every rank prepares the data: the token and semantic
caches are filled together (each rank computes its share of the shards), the released vectors
are imported by rank 0, and every rank then reads the same arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from agiqa_lib.backbones.iqa_backbone import (FULL_CHANNELS, create_iqa_backbone,
                                              dataset_image_size)
from agiqa_lib.backbones.mllm import create_mllm
from agiqa_lib.core import distributed
from agiqa_lib.core.cache import CacheKey
from agiqa_lib.core.features import auto_batch_size, describe_transform, extract_features
from agiqa_lib.core.folding import fold_batchnorm
from agiqa_lib.core.io import open_rgb
from agiqa_lib.core.profiles import get_profile
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.data.splits import assigned_rows, evenly_spread, make_split, release_order
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.model import MAAGIQA, ma_agiqa_config
from agiqa_lib.ma_agiqa.semantic import (OFFICIAL_MODEL_ID, OfficialVectorsSource,
                                         cache_official_vectors, extract_semantic_vectors,
                                         load_cached_vectors)


@dataclass
class PreparedData:
    """One dataset ready for training: rows, split, model inputs and semantic vectors.

    `tokens` [N, C, grid * grid] fp16 for frozen-backbone profiles, None for `full` (images
    are read from `df.path`). `semantic` [N, 2, D] (None when only MANIQA alone is trained).
    `mllm_source` is what a checkpoint records to rebuild the MLLM for scoring (a hub id or
    folder for `full`, the official vectors' id, or None for the profile's own); `val_order`
    lists the val rows in the order the released val loader reads them.
    """

    dataset: str
    profile: str
    protocol: str
    df: pd.DataFrame
    split: pd.Series
    tokens: torch.Tensor | None
    semantic: torch.Tensor | None
    mllm_model_id: str | None = None
    mllm_is_stand_in: bool = False
    in_channels: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    resize: str = "pil"
    weights: str = "pretrained"
    semantic_source: str = "mllm"
    mllm_source: str | None = None
    vit_checkpoint: str | None = None
    val_order: np.ndarray | None = None
    image_size: int = 224

    def rows(self, part: str) -> np.ndarray:
        """Row positions of one part ("train", "val", "test")."""
        return np.flatnonzero(self.split.to_numpy() == part)

    @property
    def semantic_dim(self) -> int | None:
        """D of the semantic vectors."""
        return None if self.semantic is None else int(self.semantic.shape[-1])

    def released_val_rows(self, batch_size: int = 8) -> np.ndarray:
        """The val rows the released val loader scores: its order (`val_order`, else file
        order), last partial batch dropped (`DataLoader(shuffle=False, drop_last=True)`,
        MA-AGIQA `main.py:264-265`)."""
        order = self.val_order if self.val_order is not None else self.rows("val")
        return np.asarray(order[:len(order) // batch_size * batch_size], dtype=int)

    def image_transform(self):
        """The image preprocessing of this data's resize (what the `full` path reads images
        with; no backbone is built)."""
        from agiqa_lib.backbones.iqa_backbone import image_transform

        return image_transform(False, resize=self.resize, size=self.image_size)


def prepare_data(cfg: MAStudyConfig) -> PreparedData:
    """Load the dataset, split it, compute (cached) backbone tokens and MLLM vectors.

    `cfg.limit` keeps N rows evenly spaced over the file (quick looks, every generator
    kept); every other row choice is the protocol's. Vectors are computed only when a
    variant of `cfg` fuses them.
    """
    df = evenly_spread(load_dataset(cfg.dataset, cfg.root, target=cfg.target), cfg.limit)
    split = make_split(df, cfg.protocol, seed=cfg.split_seed)
    order = release_order(df, cfg.protocol, seed=cfg.split_seed)
    val_order = order[split.to_numpy()[order] == "val"]
    kept = np.flatnonzero(split.isin(("train", "val", "test")).to_numpy())
    df, split = assigned_rows(df, split)
    val_order = np.searchsorted(kept, val_order)  # positions in the kept rows
    device = distributed.current(cfg.device).device_for(cfg.device)  # cfg's, or this rank's
    timings: dict[str, float] = {}
    profile = get_profile(cfg.profile)
    trained = profile.train_iqa_backbone
    image_size = cfg.image_size or dataset_image_size([str(p) for p in df["path"]],
                                                      profile.ma_max_image_size)
    # a fine-tuned backbone's weights are loaded with the model (`train.new_model`); here only
    # its width is needed, which needs no ViT-B/8 to be built
    tokens, in_channels = None, FULL_CHANNELS
    if not trained:
        backbone = create_iqa_backbone(cfg.profile, pretrained=True)
        in_channels = backbone.out_channels
        start = time.perf_counter()
        tokens = backbone_tokens(df, backbone, cfg, device, image_size)
        timings["tokens_s"] = time.perf_counter() - start
    semantic, stand_in, mllm_id, source = None, False, None, None
    if cfg.needs_semantic:
        start = time.perf_counter()
        if cfg.official_vectors_dir is not None:
            semantic = official_vectors(df, cfg.official_vectors_dir, cfg.dataset)
            mllm_id = source = OFFICIAL_MODEL_ID
        else:
            source = cfg.mllm_source()
            encoder = create_mllm(cfg.profile, device=str(device), model_id=source)
            semantic = extract_semantic_vectors(df, encoder, dataset=cfg.dataset,
                                                progress=cfg.progress)
            stand_in, mllm_id = bool(encoder.is_stand_in), encoder.model_id
            if cfg.profile == "full" and source is None:
                from agiqa_lib.backbones.mllm import DEFAULT_FULL_MODEL

                source = DEFAULT_FULL_MODEL
        timings["semantic_s"] = time.perf_counter() - start
    return PreparedData(cfg.dataset, cfg.profile, cfg.protocol, df, split, tokens, semantic,
                        mllm_model_id=mllm_id, mllm_is_stand_in=stand_in,
                        in_channels=in_channels, timings=timings, resize=cfg.resize,
                        weights=cfg.weights,
                        semantic_source="official" if cfg.official_vectors_dir else "mllm",
                        mllm_source=source, vit_checkpoint=cfg.vit_checkpoint,
                        val_order=val_order, image_size=image_size)


def official_vectors(df: pd.DataFrame, folder: str, dataset: str | None = None) -> torch.Tensor:
    """MA-AGIQA's released semantic vectors [N, 2, 4096] of `df`, from the semantic cache or
    imported once from `folder` (`{stem}_semantic_content.pt`, `{stem}_coherence.pt`)."""
    source = OfficialVectorsSource()
    try:
        return load_cached_vectors(df, source)
    except AgiqaError:
        cache_official_vectors(df, folder, dataset=dataset)
        return load_cached_vectors(df, source)


def backbone_tokens(df: pd.DataFrame, backbone: torch.nn.Module, cfg: MAStudyConfig,
                    device: torch.device, image_size: int = 224) -> torch.Tensor:
    """Frozen backbone tokens pooled to the profile's MANIQA grid, [N, C, grid^2] fp16, cached;
    images read at `image_size` (the transform, and so the cache key, records it). Computed by
    a copy of the backbone with its batch norms folded (`core.folding`, as for every cached
    feature: equal to float32 rounding, not part of the key)."""
    probe = MAAGIQA(ma_agiqa_config(cfg.profile, "maniqa", backbone.out_channels),
                    fold_batchnorm(backbone))
    probe.to(device).eval()
    transform = backbone.transform(False, resize=cfg.resize, size=image_size)
    key = CacheKey(dataset=cfg.dataset, model_id=f"{backbone.model_id}/pool{probe.cfg.maniqa.grid}",
                   profile=cfg.profile, transform=describe_transform(transform))
    batch_size = auto_batch_size(None, device, accelerator=16, side=image_size)
    return extract_features([str(p) for p in df["path"]], probe.tokens, transform, key,
                            batch_size=batch_size, fp16=True, progress=cfg.progress, device=device)


def augment(x: torch.Tensor, rng: np.random.Generator, prob: float = 0.7,
            flip: str = "as_released") -> torch.Tensor:
    """Released train augmentation of one [C, H, W] image or token grid.

    With probability `prob` rotate by k * 90 degrees, k in {1, 2, 3} w.p. 0.33/0.33/0.34
    (`np.rot90(x, k, axes=(1, 2))`); then with probability `prob` flip: over H as released
    ("horizontal" in the code, vertical in effect), or over W for `flip="horizontal"`.
    """
    if rng.random() < prob:
        x = torch.rot90(x, int(rng.choice([1, 2, 3], p=[0.33, 0.33, 0.34])), dims=(1, 2))
    if rng.random() < prob:
        x = torch.flip(x, dims=(1,) if flip == "as_released" else (2,))
    return x


class MAItems(Dataset):
    """(input, semantic, mos, row) for some rows; augments when `train` (seeded per epoch/row).

    The input is the cached token grid [C, N] when the data has tokens, else the image
    through `transform` [3, 224, 224].
    """

    def __init__(self, data: PreparedData, rows: np.ndarray, grid: int, seed: int,
                 augmentation: tuple[float, str] | None = None,
                 transform: Callable | None = None) -> None:
        self.data, self.rows, self.grid, self.seed = data, rows, grid, seed
        self.augmentation, self.transform, self.epoch = augmentation, transform, 0
        self.mos = torch.tensor(data.df["mos"].to_numpy(dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        if self.data.tokens is not None:
            x = self.data.tokens[row].float().unflatten(1, (self.grid, self.grid))
        elif getattr(self.transform, "reads_paths", False):  # released cv2: reads the file
            x = self.transform(str(self.data.df["path"].iloc[row]))
        else:
            x = self.transform(open_rgb(self.data.df["path"].iloc[row]))
        if self.augmentation is not None:
            prob, flip = self.augmentation
            x = augment(x, np.random.default_rng([self.seed, self.epoch, row]), prob, flip)
        if self.data.tokens is not None:
            x = x.flatten(1)
        sem = self.data.semantic[row] if self.data.semantic is not None else torch.zeros(0)
        return x, sem, self.mos[row], row
