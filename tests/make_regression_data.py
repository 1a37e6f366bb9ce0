"""Record the outputs of the small models on fixed inputs (tests/data/regression/*.safetensors).

`tests/test_regression_outputs.py` recomputes every case below with the current code and
compares it with the stored file, so a refactor that moves numbers fails (as open_clip's
regression tests do). Inputs come from fixed seeds inside each case; random models are
built under fixed seeds, the `lite` ones from their packaged weights.

Regenerate ONLY when a change of numbers is intended, and say in the commit message why the
numbers changed:

    HF_HUB_OFFLINE=1 .venv/bin/python tests/make_regression_data.py            # every case
    HF_HUB_OFFLINE=1 .venv/bin/python tests/make_regression_data.py --only maniqa_tiny

The cases that existed before the package layout changed (all but `mplug_owl2_tiny`) were
recorded from revision 711b529 with `--layout 711b529` (that checkout on PYTHONPATH), which
maps the same calls onto the old module paths; `--compare A B` prints the largest
differences between two folders of recorded outputs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data" / "regression"
RTOL = 1e-5  # relative to each tensor's largest magnitude (see `compare`)

# short name -> module, per package layout ("711b529": before core/backbones/<paper> split)
LAYOUTS = {
    "current": {
        "clip": "agiqa_lib.backbones.clip", "text_tower": "agiqa_lib.backbones.text_tower",
        "iqa": "agiqa_lib.backbones.iqa_backbone", "mllm": "agiqa_lib.backbones.mllm",
        "clip_agiqa": "agiqa_lib.clip_agiqa.model", "maniqa": "agiqa_lib.ma_agiqa.maniqa",
        "moe": "agiqa_lib.ma_agiqa.moe", "ma_agiqa": "agiqa_lib.ma_agiqa.model",
        "qalign": "agiqa_lib.backbones.mplug_owl2.qalign",
    },
    "711b529": {
        "clip": "agiqa_lib.models.clip", "text_tower": "agiqa_lib.models.text_tower",
        "iqa": "agiqa_lib.models.iqa_backbone", "mllm": "agiqa_lib.models.mllm",
        "clip_agiqa": "agiqa_lib.models.clip_agiqa", "maniqa": "agiqa_lib.models.maniqa",
        "moe": "agiqa_lib.models.moe", "ma_agiqa": "agiqa_lib.models.ma_agiqa",
        "qalign": None,
    },
}
QUESTIONS = ("Evaluate the input image to determine if its quality is compromised due to a "
             "lack of meaningful semantic content.",
             "Evaluate if the image quality is compromised due to violations of coherence.")
CLASSES = ("terrible", "bad", "poor", "average", "good", "perfect")


def load_api(layout: str = "current") -> SimpleNamespace:
    """The modules of one package layout under short names (None where it has no such module)."""
    return SimpleNamespace(**{name: importlib.import_module(path) if path else None
                              for name, path in LAYOUTS[layout].items()})


# --------------------------------------------------------------------------- fixed inputs


def randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """Standard normal tensor from its own generator (independent of torch's global RNG)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def images(seed: int, n: int = 2, size: tuple[int, int] = (96, 72)) -> list:
    """`n` smooth RGB PIL images (gradients + seeded noise), not square, as generated images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    out = []
    for _ in range(n):
        phase = rng.uniform(0, 6.3, 3)
        base = np.stack([np.sin(4 * x + phase[c]) * np.cos(3 * y - phase[c]) for c in range(3)], -1)
        pixels = 127.5 + 90 * base + rng.normal(0, 12, (height, width, 3))
        out.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"))
    return out


def thin(tokens: torch.Tensor, channels: int, positions: int) -> dict[str, torch.Tensor]:
    """A few KB of a [B, C, N] token tensor: a strided subset and the per-channel mean and std."""
    return {"subset": tokens[:, ::channels, ::positions], "channel_mean": tokens.mean(-1),
            "channel_std": tokens.std(-1)}


# --------------------------------------------------------------------------- cases


def _clip_outputs(api, bundle, n_ctx: int = 4) -> dict[str, torch.Tensor]:
    """Image and text features of a CLIP bundle, and CoOp text features with fixed context."""
    model = bundle.model
    pixels = torch.stack([bundle.preprocess_val(im) for im in images(1)])
    ids = bundle.tokenizer([f"a {c} photo." for c in CLASSES])
    tower = api.text_tower.TextTower(model)
    prompt_ids = tower.placeholder_prompts(CLASSES, n_ctx)
    context = randn(2, n_ctx, tower.width, scale=0.02)
    embeds = tower.insert_context(tower.token_embedding(prompt_ids), context)
    with torch.no_grad():
        return {"image_features": model.encode_image(pixels),
                "text_features": model.encode_text(ids),
                "coop_text_features": tower.encode_with_embeddings(embeds, prompt_ids)}


def case_clip_tiny(api) -> dict[str, torch.Tensor]:
    """Tiny CustomTextCLIP (EfficientNet test model + 2-layer BERT), the `tiny` CLIP profile."""
    return _clip_outputs(api, api.clip.create_clip("tiny"))


def case_clip_tiny_full_family(api) -> dict[str, torch.Tensor]:
    """Tiny open_clip ViT CLIP saved by `save_tiny_full_clip`, loaded by the `full` loader."""
    with tempfile.TemporaryDirectory() as folder:
        path = api.clip.save_tiny_full_clip(Path(folder) / "tiny-clip")
        return _clip_outputs(api, api.clip.create_clip("full", checkpoint=path))


def case_clip_lite(api) -> dict[str, torch.Tensor]:
    """The `lite` CLIP (packaged Lite0 + MiniLM weights, seeded projections); 2 prompts kept."""
    out = _clip_outputs(api, api.clip.create_clip("lite"))
    return {k: v[:2] for k, v in out.items()}


def case_clip_agiqa_tiny(api) -> dict[str, torch.Tensor]:
    """CLIP-AGIQA and its image-only control on the tiny CLIP: seeded init, fixed features."""
    bundle = api.clip.create_clip("tiny")
    features = randn(3, 4, bundle.embed_dim)
    out = {}
    for use_text, name in ((True, "clip_agiqa"), (False, "image_only")):
        torch.manual_seed(5)
        config = api.clip_agiqa.ClipAgiqaConfig(n_ctx=4, use_text=use_text)
        model = api.clip_agiqa.create_clip_agiqa("tiny", config, bundle=bundle).eval()
        with torch.no_grad():
            out[f"{name}_score"] = model.score_features(features)
            if use_text:
                out["text_features"] = model.text_features()
                out["ctx"] = model.prompt_learner.ctx.detach().clone()
    return out


def case_iqa_backbone_tiny(api) -> dict[str, torch.Tensor]:
    """Tiny random ViT-B/8-like backbone: tokens [B, 64, 784] of two images (thinned)."""
    backbone = api.iqa.create_iqa_backbone("tiny")
    transform = backbone.transform(False)
    with torch.no_grad():
        tokens = backbone(torch.stack([transform(im) for im in images(4)]))
    return thin(tokens, 4, 16)


def case_iqa_backbone_lite(api) -> dict[str, torch.Tensor]:
    """Real EfficientNet-Lite0 (packaged weights) grid tokens [1, 512, 784] (thinned)."""
    backbone = api.iqa.create_iqa_backbone("lite")
    transform = backbone.transform(False)
    with torch.no_grad():
        tokens = backbone(transform(images(6, n=1, size=(256, 192))[0]).unsqueeze(0))
    return thin(tokens, 16, 16)


def case_maniqa_tiny(api) -> dict[str, torch.Tensor]:
    """MANIQA of the `tiny` profile, released and clean TABlock, seeded init, fixed tokens."""
    tokens = randn(7, 2, 24, 16)  # [B, C, 4 x 4 grid]
    out = {}
    for clean in (False, True):
        cfg = api.ma_agiqa.ma_agiqa_config("tiny", "maniqa", in_channels=24,
                                           clean_tablock=clean).maniqa
        torch.manual_seed(8)
        model = api.maniqa.Maniqa(cfg).eval()
        with torch.no_grad():
            result = model(tokens)
        tag = "clean" if clean else "released"
        out.update({f"{tag}_f": result.f, f"{tag}_w": result.w, f"{tag}_score": result.score})
    return out


def case_moe_fusion(api) -> dict[str, torch.Tensor]:
    """Every MoE fusion variant: seeded init, fixed quality feature and semantic vectors."""
    feature, semantic = randn(9, 3, 16), randn(10, 3, 2, 8)
    out = {}
    for variant in sorted(api.moe.FUSION_VARIANTS):
        torch.manual_seed(11)
        fusion = api.moe.MoEFusion(api.moe.fusion_config(variant, 16, 8)).eval()
        with torch.no_grad():
            result = fusion(feature, semantic)
        out[f"{variant}_score"] = result.score
        if result.gates is not None:
            out[f"{variant}_gates"] = result.gates
    return out


def case_ma_agiqa_tiny(api) -> dict[str, torch.Tensor]:
    """Tiny MA-AGIQA end to end from pixels: MANIQA alone and three fusion variants."""
    pixels, semantic = randn(12, 2, 3, 224, 224).clamp(-1, 1), randn(13, 2, 2, 64)
    out = {}
    for variant in ("maniqa", "released_gate", "softmax_gate", "concat_mlp"):
        torch.manual_seed(14)
        model = api.ma_agiqa.create_ma_agiqa("tiny", variant).eval()
        with torch.no_grad():
            result = model(pixels, semantic if model.needs_semantic else None)
        out[f"{variant}_score"] = result.score
        if result.gates is not None:
            out[f"{variant}_gates"] = result.gates
    return out


def case_semantic_lite(api) -> dict[str, torch.Tensor]:
    """The `lite` stand-in encoder: [B, 2 questions, 384], image after and before the text."""
    out = {}
    for placement in ("after_text", "before_text"):
        encoder = api.mllm.load_lite_encoder(image_placement=placement)
        out[placement] = encoder.encode_questions(images(15), list(QUESTIONS))
    return out


def case_mplug_owl2_tiny(api) -> dict[str, torch.Tensor]:
    """Tiny random mPLUG-Owl2 (`tiny` MLLM): semantic vectors and Q-Align level logits."""
    encoder = api.mllm.create_mllm("tiny")
    vectors = encoder.encode_questions(images(16), list(QUESTIONS))
    logits = api.qalign.load_qalign("tiny").level_logits(images(17))
    return {"vectors": vectors, "qalign_level_logits": logits}


CASES: dict[str, Callable] = {name[5:]: fn for name, fn in globals().items()
                              if name.startswith("case_")}
NEW_CASES = ("mplug_owl2_tiny",)  # not in revision 711b529


def compute(name: str, api: SimpleNamespace) -> dict[str, torch.Tensor]:
    """Outputs of one case as contiguous float32 CPU tensors."""
    with torch.random.fork_rng(devices=[]):
        out = CASES[name](api)
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def differences(actual: dict[str, torch.Tensor],
                expected: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Per tensor: (max |difference|, that divided by the largest |expected| value)."""
    out = {}
    for key, ref in expected.items():
        diff = (actual[key] - ref).abs().max().item() if actual[key].shape == ref.shape else np.inf
        out[key] = (diff, diff / max(ref.abs().max().item(), 1e-12))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="cases to record")
    parser.add_argument("--out", type=Path, default=DATA, help=f"folder (default {DATA})")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="current",
                        help="module layout of the checkout on the path")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="print the largest differences between two output folders")
    args = parser.parse_args(argv)
    from safetensors.torch import load_file, save_file

    if args.compare:
        a, b = args.compare
        for path in sorted(a.glob("*.safetensors")):
            if not (b / path.name).is_file():
                print(f"{path.stem}: only in {a}")
                continue
            for key, (diff, rel) in differences(load_file(path), load_file(b / path.name)).items():
                print(f"{path.stem}/{key}: max |diff| {diff:.3g} (relative {rel:.3g})")
        return
    torch.set_num_threads(1)
    api = load_api(args.layout)
    names = args.only or [n for n in CASES if args.layout == "current" or n not in NEW_CASES]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        tensors = compute(name, api)
        path = args.out / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"layout": args.layout})
        print(f"{path}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())} "
              f"({path.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    sys.exit(main())
