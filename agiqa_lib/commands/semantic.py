"""`agiqa semantic`: MA-AGIQA semantic vectors into the cache (extract with an MLLM, or import).

`accelerate launch --multi_gpu --num_processes N -m agiqa_lib.cli semantic extract ...` (or
`torchrun --nproc_per_node N -m agiqa_lib.cli semantic extract ...`) loads the MLLM once per
process and shares the shards out (shard i -> rank i % N) into the same cache entry; rank 0
merges and prints. `import` under a launcher is done by rank 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agiqa_lib.commands.options import add_dataset_arguments
from agiqa_lib.core.profiles import PROFILE_NAMES
from agiqa_lib.data.datasets import load_dataset

NAME = "semantic"
HELP = ("cache MA-AGIQA semantic vectors [N, 2, D] of a dataset: `extract` them with an MLLM "
        "profile, or `import` the released per-image .pt files")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agiqa semantic extract` and `agiqa semantic import`."""
    actions = parser.add_subparsers(dest="action", required=True)
    extract = actions.add_parser("extract", help="ask the two questions with an MLLM profile")
    add_dataset_arguments(extract, PROFILE_NAMES, limit="only the first N images of the "
                                                          "dataset (for timing runs)")
    _cache_argument(extract)
    extract.add_argument("--model-id", default=None,
                         help="full only: hub id or local folder (default "
                              "MAGAer13/mplug-owl2-llama2-7b, the paper's MLLM)")
    extract.add_argument("--image-placement", default="after_text",
                         choices=["after_text", "before_text"],
                         help="image after the question (as released, default) or before it")
    extract.add_argument("--batch-size", type=int, default=8, help="images per forward (8)")
    extract.add_argument("--shard-size", type=int, default=64,
                         help="images per cache shard when the entry is created (64); a "
                              "launched run hands out whole shards")
    extract.add_argument("--no-resume", action="store_true",
                         help="discard a cached or partial result and start again")
    imported = actions.add_parser("import", help="import the official MA-AGIQA .pt vectors")
    imported.add_argument("folder", help="folder with {stem}_semantic_content.pt and "
                                         "{stem}_coherence.pt per image")
    add_dataset_arguments(imported)
    _cache_argument(imported)


def _cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None,
                        help="root of the semantic cache (default: the study cache/semantic)")


def run(args: argparse.Namespace) -> int:
    """Extract or import, then print where the vectors are (and images/s for an extraction)."""
    from agiqa_lib.core import distributed
    from agiqa_lib.core.errors import AgiqaError
    from agiqa_lib.core.manifest import MANIFEST
    from agiqa_lib.ma_agiqa import semantic

    group = distributed.current(getattr(args, "device", None))
    df = load_dataset(args.dataset, root=args.root)
    if args.action == "import":
        entry = semantic.cache_official_vectors(df, args.folder, cache_dir=args.cache_dir,
                                                dataset=args.dataset)
        if group.is_main:
            print(f"imported official vectors of {len(df)} images into {entry}")
        return 0
    from agiqa_lib.backbones.mllm import create_mllm

    if args.shard_size < 1:
        raise AgiqaError(f"--shard-size must be a positive number of images, got "
                         f"{args.shard_size}.")
    if args.limit is not None:
        df = df.head(args.limit)
    device = str(group.device_for(args.device)) if group.distributed else args.device
    encoder = create_mllm(args.profile, model_id=args.model_id,
                          image_placement=args.image_placement, device=device)
    entry = semantic.semantic_cache_entry(df, encoder, args.cache_dir)
    before = _stamp(entry / MANIFEST)
    group.barrier()  # every rank has seen the manifest before any rank changes it
    start = time.perf_counter()
    vectors = semantic.extract_semantic_vectors(df, encoder, cache_dir=args.cache_dir,
                                                batch_size=args.batch_size,
                                                resume=not args.no_resume,
                                                shard_size=args.shard_size, dataset=args.dataset)
    seconds = time.perf_counter() - start
    if not group.is_main:
        return 0
    run_stats = semantic.read_manifest(entry)["extraction"] or {}
    print(f"semantic vectors {tuple(vectors.shape)} of {encoder.model_id} in {entry}")
    if _stamp(entry / MANIFEST) != before and run_stats.get("images_computed"):
        processes = run_stats.get("processes", 1)
        print(f"this run: {run_stats['images_computed']} images in {run_stats['seconds']:.1f} s "
              f"({run_stats['images_per_s']:.2f} images/s, both questions per image"
              + (f", {processes} processes" if processes > 1 else "") + ")")
    else:
        print(f"already cached: read in {seconds:.1f} s")
    if encoder.is_stand_in:
        print("note: lite vectors come from a STAND-IN (image features read by a sentence "
              "encoder), not from an MLLM")
    return 0


def _stamp(path: Path) -> int | None:
    """Modification time (ns) of a file, None when absent: tells a new manifest from an old one."""
    return path.stat().st_mtime_ns if path.exists() else None
