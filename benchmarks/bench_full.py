"""Speed and peak memory of the `full` models with random full-size weights, on one device.

Rows (each measured in its own subprocess, so that its peak memory is its own):

- `clip_features`: CLIP ViT-B/16 `encode_image` (what feature extraction and CLIP-AGIQA's
  fresh views run), batch 32, under no_grad.
- `clip_agiqa_step`: one CLIP-AGIQA training step on fresh views, batch 32: frozen image
  encoder (no_grad), the prompt learner through the frozen text tower, head, MSE, SGD.
- `ma_train_step`: MA-AGIQA training steps at the released batch 8: ViT-B/8 blocks 0-9 +
  MANIQA + the released gate (random semantic vectors [8, 2, 4096]), MSE, Adam, fp32.
- `ma_score`: MA-AGIQA scoring (eval, inference_mode), batch 8.

Precision follows the releases: CLIP-AGIQA keeps CLIP in fp16 (Dassl PREC "fp16", no autocast)
with the context vectors fp16 and the head fp32 (`fp16_as_released`) on CUDA, fp32 on CPU
(fp16 CPU kernels are slow); MA-AGIQA's `main.py` uses neither autocast nor GradScaler, so its
rows are fp32 everywhere. Inputs are random tensors of the model's input size (the rows time
the models, not JPEG decoding). Images/s counts images through the timed iterations after one
untimed warm-up iteration. Peak memory: `torch.cuda.max_memory_allocated` on CUDA, the
subprocess's peak RSS (`ru_maxrss`, model weights and Python included) on CPU.

    python benchmarks/bench_full.py --device cpu --n 16
    python benchmarks/bench_full.py --device cuda --n 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROWS = {
    "clip_features": "CLIP ViT-B/16 image features",
    "clip_agiqa_step": "CLIP-AGIQA training step (fresh views)",
    "ma_train_step": "MA-AGIQA training step (ViT-B/8 + MANIQA + gate)",
    "ma_score": "MA-AGIQA scoring",
}
BATCH = {"clip_features": 32, "clip_agiqa_step": 32, "ma_train_step": 8, "ma_score": 8}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clip_precision(device) -> str:
    return "fp16_as_released" if device.type == "cuda" else "fp32"


def measure(row: str, device_name: str, n: int, threads: int | None) -> dict:
    """Run one row in this process; returns its numbers."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    batch = BATCH[row]
    steps = max(1, -(-n // batch))  # timed iterations (n images, rounded up to batches)
    precision = "fp32"
    if row.startswith("clip"):
        from agiqa_lib.backbones.clip import create_clip
        from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, create_clip_agiqa

        precision = _clip_precision(device)
        bundle = create_clip("full", pretrained=None, device=device, precision=precision)
        x = torch.randn(batch, 3, bundle.image_size, bundle.image_size, device=device)
        if row == "clip_features":
            def step() -> None:
                with torch.no_grad():
                    bundle.model.encode_image(x.to(bundle.dtype))
        else:
            model = create_clip_agiqa("full", ClipAgiqaConfig(frozen_precision=precision),
                                      bundle=bundle, device=device)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
            mos = torch.rand(batch, device=device) * 5
            model.train()

            def step() -> None:
                with torch.no_grad():
                    features = bundle.model.encode_image(x.to(bundle.dtype))
                loss = torch.nn.functional.mse_loss(model.score_features(features), mos)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    else:
        from agiqa_lib.ma_agiqa.model import create_ma_agiqa

        model = create_ma_agiqa("full", "released_gate", pretrained=False, device=device)
        x = torch.randn(batch, 3, 224, 224, device=device)
        semantic = torch.randn(batch, 2, 4096, device=device)
        if row == "ma_train_step":
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                         lr=1e-5, weight_decay=1e-5)
            mos = torch.rand(batch, device=device) * 5
            model.train()

            def step() -> None:
                loss = torch.nn.functional.mse_loss(model(x, semantic).score, mos)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        else:
            model.eval()

            def step() -> None:
                with torch.inference_mode():
                    model(x, semantic)
    step()  # warm-up (cuDNN / oneDNN kernel choice, allocator)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        memory = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
        memory = "process peak RSS"
    return {"row": row, "what": ROWS[row], "device": device_name, "precision": precision,
            "batch": batch, "images": steps * batch, "seconds": round(seconds, 2),
            "images_per_s": round(steps * batch / seconds, 3), "peak_gib": round(peak, 2),
            "memory": memory, "threads": torch.get_num_threads()}


def table(results: list[dict]) -> str:
    """A Markdown table of the rows."""
    lines = ["| row | device | precision | batch | images | images/s | peak memory (GiB) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['what']} | {r['device']} | {r['precision']} | {r['batch']} | "
                     f"{r['images']} | {r['images_per_s']:.3g} | {r['peak_gib']:.2f} "
                     f"({r['memory']}) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--n", type=int, default=16,
                        help="images per row (rounded up to whole batches)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # one row, this process
    args = parser.parse_args()
    if args.row is not None:
        print(json.dumps(measure(args.row, args.device, args.n, args.threads)))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"bench_full: --device {args.device} asked for, but CUDA is not available",
                  file=sys.stderr)
            return 2
    results = []
    for row in args.rows:
        cmd = [sys.executable, __file__, "--row", row, "--device", args.device, "--n",
               str(args.n)] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['what']}: {r['images_per_s']:.3g} images/s, peak {r['peak_gib']:.2f} GiB",
              file=sys.stderr)
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
