"""`agiqa extract`: fill a dataset's feature cache (CLIP image views or IQA-backbone tokens).

A cache found complete is verified before it is reported "already cached": every shard's
SHA-256 is recomputed and a shard that fails is logged and recomputed, as the training path
does when it loads the cache. It is on by default because it is cheap beside extraction
(`benchmarks/bench_extraction.py --hash-cost`: 49 MB of shards in 0.09 s on the 2-core CPU,
under 1 % of the time their extraction took); `--no-verify` skips it.

On several processes (`accelerate launch --multi_gpu --num_processes N -m agiqa_lib.cli
extract ...`, or `torchrun --nproc_per_node N -m agiqa_lib.cli extract ...`) each rank computes
the shards i with i % N == rank into the same cache entry and rank 0 merges the manifest
(`core.cache.FeatureStore.sharded_writing`); the result is the single-process cache, byte for
byte. Rank 0 prints; the images/s it prints are the group's.
"""

from __future__ import annotations

import argparse

from agiqa_lib.commands.options import add_dataset_arguments
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.profiles import PROFILE_NAMES

NAME = "extract"
HELP = ("extract frozen image features of a dataset into the resumable cache "
        "(CLIP image features per view, or IQA-backbone tokens); prints images/s and the path")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa extract`."""
    add_dataset_arguments(parser, PROFILE_NAMES, limit="only the first N images of the dataset "
                                                      "(a separate cache entry)")
    parser.add_argument("--what", default="clip", choices=("clip", "iqa"),
                        help="clip: CLIP image features; iqa: MANIQA backbone tokens [C, 784]")
    parser.add_argument("--views", default="test",
                        help="clip only: comma-separated views: 'test', 'aug<k>', or a number K "
                             "for aug0..aug{K-1} (e.g. 'test,4'; default test)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed of the augmented views (default 0)")
    parser.add_argument("--protocol", default=None,
                        help="clip only: the split whose rows a CLIP-AGIQA run reads (e.g. "
                             "clip_agiqa): augmented views of its train rows only, as notebook "
                             "02 / train-clip extract them (default: every image)")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="with --protocol: replace the protocol's own split seed")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch (default: 4 on a CPU, 32 on a GPU)")
    parser.add_argument("--fp16", action="store_true",
                        help="store float16 features (half the disk; default for --what iqa)")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="image-loading worker processes (default 0)")
    parser.add_argument("--checkpoint", default=None,
                        help="full profile only: local weights file instead of the hub")
    parser.add_argument("--shard-size", type=int, default=None,
                        help="rows per cache shard when the entry is created (default 512); "
                             "a launched run hands out whole shards, so use at least one shard "
                             "per process")
    parser.add_argument("--no-verify", action="store_true",
                        help="trust cached shards without re-reading them (by default every "
                             "shard's SHA-256 is checked; a corrupt one is logged and recomputed)")


def _view_names(text: str) -> tuple[list[str], int]:
    """'test,4,aug9' -> (['test', 'aug9'], 4)."""
    views, n_aug = [], 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.isdigit():
            n_aug = max(n_aug, int(part))
        else:
            views.append(part)
    return views, n_aug


def run(args: argparse.Namespace) -> int:
    """Load the dataset, build the model, fill each requested cache entry, print throughput."""
    from agiqa_lib.core import distributed
    from agiqa_lib.data.datasets import load_dataset
    from agiqa_lib.core.features import (backbone_view, clip_view, fill_store, open_store,
                                    parse_views)

    if args.limit is not None and args.limit < 1:
        raise AgiqaError(f"--limit must be a positive number of images, got {args.limit}.")
    if args.shard_size is not None and args.shard_size < 1:
        raise AgiqaError(f"--shard-size must be a positive number of rows, got "
                         f"{args.shard_size}.")
    if args.protocol is not None and args.what != "clip":
        raise AgiqaError("--protocol applies to --what clip only; IQA-backbone tokens are "
                         "extracted for every image.")
    group = distributed.current(args.device)
    device = group.device_for(args.device) if group.distributed else args.device
    df = load_dataset(args.dataset, root=args.root)
    if args.limit is not None:
        df = df.head(args.limit)
    aug_rows = None
    if args.protocol is not None:
        from agiqa_lib.clip_agiqa.study import training_rows
        from agiqa_lib.data.splits import assigned_rows, make_split

        df, split = assigned_rows(df, make_split(df, args.protocol, seed=args.split_seed))
        aug_rows = training_rows(split)
    paths = [str(p) for p in df["path"]]
    if args.what == "clip":
        from agiqa_lib.backbones.clip import create_clip

        views = parse_views(*_view_names(args.views))
        bundle = create_clip(args.profile, checkpoint=args.checkpoint, device=device)
        specs = [clip_view(bundle, args.dataset, view, args.seed,
                           rows=None if view == "test" else aug_rows) for view in views]
        fp16 = args.fp16
    else:
        from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

        if args.views != "test":
            raise AgiqaError("--views applies to --what clip only; IQA-backbone tokens are "
                             "extracted for the fixed (test) transform.")
        backbone = create_iqa_backbone(args.profile, checkpoint=args.checkpoint, device=device)
        specs = [backbone_view(backbone, args.dataset, args.profile)]
        fp16 = True
    layout = {} if args.shard_size is None else {"shard_size": args.shard_size}
    for spec in specs:
        files = spec.files(paths)
        store = open_store(files, spec.key, fp16=fp16, **layout)
        stats = fill_store(store, files, spec.encode, spec.transform, batch_size=args.batch_size,
                           num_workers=args.num_workers, device=device,
                           verify=not args.no_verify, seed_rows=spec.rows)
        if not group.is_main:
            continue
        if stats.n_computed:
            rate = (f"{stats.n_computed} images in {stats.seconds:.1f} s, "
                    f"{stats.images_per_s:.1f} images/s"
                    + (f" on {stats.processes} processes" if stats.processes > 1 else ""))
        elif args.no_verify:
            rate = "already cached, checksums not verified"
        else:
            rate = f"already cached, checksums verified in {stats.seconds:.2f} s"
        print(f"{args.what} {spec.key.view}: {len(files)} images ({rate}); "
              f"item shape {list(store.item_shape)} {'float16' if fp16 else 'float32'}; "
              f"cache {store.path}")
    return 0
