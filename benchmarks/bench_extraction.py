"""Images/s of a bare encoder forward vs extraction through the feature-cache pipeline, one run.

The bare forward encodes a fixed random batch repeatedly (no decoding, no transform, no disk);
the pipeline extracts the same number of real image files into a fresh temporary cache (file
hashing, JPEG decoding, the model's own transform, forward, fp32/fp16 shards, reading back).
Their ratio is the cache pipeline's overhead. Peak memory: process RSS high-water mark on CPU,
`torch.cuda.max_memory_allocated` per phase on GPU. Uses the first N images of the real
AGIQA-3K when present, else N synthetic 512x512 JPEGs. `full` (random weights) needs a GPU.

`--hash-cost` adds the cost of identifying inputs by content and of verifying a reused cache,
in the same run, beside the extraction time per image: the content key over every AGIQA-3K file
(all 2,982, or the N synthetic files) with an empty file-hash index (cold: every file read and
hashed; whether the bytes come from the OS page cache is not controlled) and again with the
index filled (warm: stat only), a bare stat loop (what the previous path+size key cost), and
the SHA-256 check of the extracted shards that `agiqa extract` runs before "already cached".

    python benchmarks/bench_extraction.py --profile lite --n 256
    python benchmarks/bench_extraction.py --profile lite --n 64 --hash-cost
    python benchmarks/bench_extraction.py --profile full --what iqa --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from agiqa_lib.core.cache import CacheKey, FeatureStore  # noqa: E402
from agiqa_lib.core.content_key import file_list_hash  # noqa: E402
from agiqa_lib.core.features import (FeatureSpec, backbone_view, clip_view,  # noqa: E402
                                     describe_transform, extract_features, open_store)
from agiqa_lib.core.paths import shared_agiqa3k_root  # noqa: E402


def build_spec(profile: str, what: str, device: str) -> FeatureSpec:
    """Encoder, transform and key for the chosen profile; `full` is built with random weights."""
    if what == "iqa":
        from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

        backbone = create_iqa_backbone(profile, pretrained=profile != "full", device=device)
        return backbone_view(backbone, "bench", profile)
    if profile != "full":
        from agiqa_lib.backbones.clip import create_clip

        return clip_view(create_clip(profile, device=device), "bench")
    import open_clip

    model, _, preprocess_val = open_clip.create_model_and_transforms("ViT-B-16", pretrained=None)
    model = model.to(device).eval()
    key = CacheKey(dataset="bench", model_id="random:open_clip:ViT-B-16/encode_image",
                   profile=profile, transform=describe_transform(preprocess_val))
    return FeatureSpec(key, model.encode_image, preprocess_val)


def real_images() -> list[str]:
    """Every image of the real AGIQA-3K, sorted (empty when the data is absent)."""
    root = shared_agiqa3k_root()
    return [] if root is None else sorted(str(p) for p in (root / "images").glob("*.jpg"))


def image_files(n: int, folder: Path) -> tuple[list[str], str]:
    """The first n real AGIQA-3K images, or n synthetic 512x512 JPEGs written to `folder`."""
    paths = real_images()[:n]
    if len(paths) == n:
        return paths, f"real AGIQA-3K ({shared_agiqa3k_root()})"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"synthetic_{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths, "synthetic 512x512 JPEGs"


def peak_memory(device: str) -> str:
    """Process RSS high-water mark (MiB), plus the CUDA allocator's peak since the last reset."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    text = f"peak RSS {rss:.0f} MiB"
    if torch.device(device).type == "cuda":
        text += f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        torch.cuda.reset_peak_memory_stats()
    return text


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bare_forward(spec: FeatureSpec, sample: Image.Image, n: int, batch_size: int,
                 device: str) -> float:
    """Images/s of `spec.encode` alone on a batch of one transformed image, after one warm-up."""
    batch = spec.transform(sample).unsqueeze(0).repeat(batch_size, 1, 1, 1).to(device)
    with torch.inference_mode():
        spec.encode(batch)
        synchronize(device)
        start, done = time.perf_counter(), 0
        while done < n:
            spec.encode(batch)
            done += batch_size
        synchronize(device)
    return done / (time.perf_counter() - start)


def timed(work) -> float:
    """Seconds one call of `work()` takes."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def hash_cost(files: list[str], store: FeatureStore, per_image_s: float, folder: Path) -> None:
    """Print the content key's and the reuse verification's cost against extraction per image."""
    megabytes = sum(os.path.getsize(p) for p in files) / 2**20
    shard_mb = sum(p.stat().st_size for p in store.path.glob("shard_*")) / 2**20
    index = folder / "bench_file_hashes.json"

    def verify() -> None:
        with store.writing(verify=True):
            assert store.complete

    rows = [
        (f"stat only (previous path+size key), {len(files)} files",
         timed(lambda: [os.stat(p) for p in files]), len(files)),
        (f"content key, cold index: hash {len(files)} files ({megabytes:.0f} MB)",
         timed(lambda: file_list_hash(files, index=index)), len(files)),
        (f"content key, warm index: stat {len(files)} files",
         timed(lambda: file_list_hash(files, index=index)), len(files)),
        (f"verify shards before reuse: SHA-256 of {shard_mb:.1f} MB", timed(verify), store.n),
        (f"load the cache (always checks SHA-256), {store.n} images", timed(store.load), store.n),
    ]
    print(f"\n{'cost (one run)':58s} {'s':>8s} {'ms/image':>9s} {'/ extraction':>13s}")
    for label, seconds, count in rows:
        per = seconds / count
        print(f"{label:58s} {seconds:8.3f} {per * 1e3:9.3f} {per / per_image_s:13.5f}")
    print(f"{'extraction through the pipeline, per image':58s} {'':8s} "
          f"{per_image_s * 1e3:9.3f} {1:13.5f}")


def main(argv: list[str] | None = None) -> int:
    """Run both measurements for one profile and print them with their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="lite", choices=("full", "lite", "tiny"))
    parser.add_argument("--what", default="clip", choices=("clip", "iqa"))
    parser.add_argument("--n", type=int, default=256, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--fp16", action="store_true", help="store features as float16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hash-cost", action="store_true",
                        help="also time the content key (cold and warm) and shard verification")
    args = parser.parse_args(argv)
    if args.profile == "full" and torch.device(args.device).type != "cuda":
        print("bench_extraction: --profile full (random ViT-B weights) runs on a GPU only; "
              "pass --device cuda on a GPU machine.", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="agiqa-bench-") as tmp:
        os.environ["AGIQA_CACHE_DIR"] = str(Path(tmp) / "cache")
        paths, source = image_files(args.n, Path(tmp))
        spec = build_spec(args.profile, args.what, args.device)
        print(f"profile {args.profile}, {args.what} features, {args.n} images from {source}, "
              f"batch {args.batch_size}, device {args.device}, torch threads "
              f"{torch.get_num_threads()}")
        print(f"after model build: {peak_memory(args.device)}")

        bare = bare_forward(spec, Image.open(paths[0]).convert("RGB"), args.n, args.batch_size,
                            args.device)
        print(f"bare forward:   {bare:8.1f} images/s   ({peak_memory(args.device)})")

        start = time.perf_counter()
        feats = extract_features(paths, spec.encode, spec.transform, spec.key,
                                 batch_size=args.batch_size, fp16=args.fp16,
                                 num_workers=args.num_workers, progress=False,
                                 device=args.device)
        synchronize(args.device)
        piped = args.n / (time.perf_counter() - start)
        print(f"cache pipeline: {piped:8.1f} images/s   ({peak_memory(args.device)}); "
              f"features {list(feats.shape)} {feats.dtype}")
        print(f"ratio pipeline / bare forward: {piped / bare:.2f}")
        if args.hash_cost:
            files = real_images() or paths
            hash_cost(files, open_store(paths, spec.key, fp16=args.fp16), 1 / piped, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
