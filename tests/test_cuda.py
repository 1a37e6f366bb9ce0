"""On a CUDA device: the paths no CPU runs (CLIP-AGIQA in fp16 as released, MA-AGIQA's ViT-B/8
fine-tune on the GPU) take a training step, and a model gives the CPU's numbers on the GPU.

Skipped without CUDA (CI and this project's CPU machines have none); on a GPU machine:
`pytest tests/test_cuda.py`. Full-size architectures with seeded random weights, no download.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (none on CI or this CPU machine)")

CUDA = torch.device("cuda")


def _full_clip_agiqa(precision: str):
    from agiqa_lib.clip_agiqa.model import ClipAgiqaConfig, create_clip_agiqa

    torch.manual_seed(0)  # the same head and context for every precision
    return create_clip_agiqa("full", ClipAgiqaConfig(frozen_precision=precision, dropout=0.0),
                             device=CUDA, pretrained=None)


def test_clip_agiqa_fp16_as_released_trains_and_agrees_with_fp32():
    half, full = _full_clip_agiqa("fp16_as_released"), _full_clip_agiqa("fp32")
    # as released: fp16 CLIP and context vectors, fp32 head
    assert half.frozen_dtype == torch.float16 and half.prompt_learner.ctx.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in half.regression.parameters())
    assert full.prompt_learner.ctx.dtype == torch.float32
    # the same context values (an fp16 draw differs from an fp32 one): compare precision only
    with torch.no_grad():
        half.prompt_learner.ctx.copy_(full.prompt_learner.ctx)
    images = torch.randn(8, 3, 224, 224, device=CUDA, generator=torch.Generator(CUDA).manual_seed(1))
    half.eval(), full.eval()
    with torch.no_grad():
        a, b = half(images), full(images)
        image_cos = torch.cosine_similarity(half.encode_image(images), full.encode_image(images))
        text_cos = torch.cosine_similarity(half.text_features(), full.text_features())
    print(f"cosine fp16 vs fp32: image min {image_cos.min():.6f}, text min {text_cos.min():.6f}; "
          f"predictions fp16 {a.tolist()} fp32 {b.tolist()}")
    assert torch.isfinite(a).all() and a.dtype == torch.float32
    # fp16 frozen encoders: the same feature directions as fp32, to fp16 rounding
    assert image_cos.min() > 0.999 and text_cos.min() > 0.999
    assert (a - b).abs().max() <= 0.02 * b.abs().max() + 1e-4
    # one SGD step (the release's optimiser) on fp16 context vectors moves them and stays finite
    params = [p for p in half.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    ctx_before = half.prompt_learner.ctx.detach().clone()
    half.train()
    mos = torch.linspace(0, 5, 8, device=CUDA)
    loss = torch.nn.functional.mse_loss(half(images), mos)
    optimizer.zero_grad()
    loss.backward()
    assert half.prompt_learner.ctx.grad.dtype == torch.float16
    assert torch.isfinite(half.prompt_learner.ctx.grad).all()
    optimizer.step()
    assert not torch.equal(half.prompt_learner.ctx, ctx_before)
    assert all(torch.isfinite(p).all() for p in params)


def test_ma_agiqa_full_on_cuda_matches_cpu_and_fine_tunes_the_vit():
    from agiqa_lib.ma_agiqa.model import create_ma_agiqa

    torch.manual_seed(0)
    cpu = create_ma_agiqa("full", "released_gate", pretrained=False).eval()
    gpu = copy.deepcopy(cpu).to(CUDA).eval()
    gen = torch.Generator().manual_seed(2)
    x, semantic = torch.randn(2, 3, 224, 224, generator=gen), torch.randn(2, 2, 4096, generator=gen)
    # compare fp32 with fp32; torch's settings restored after (pytest's monkeypatch cannot
    # undo an attribute of torch.backends.cuda.matmul: it deletes what it did not find)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            expected = cpu(x, semantic).score
            got = gpu(x.to(CUDA), semantic.to(CUDA)).score.cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got, expected)
    # the `full` profile fine-tunes ViT-B/8 blocks: one Adam step on the GPU changes them
    trainable = [p for p in gpu.backbone.parameters() if p.requires_grad]
    assert trainable
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.Adam([p for p in gpu.parameters() if p.requires_grad], lr=1e-5,
                                 weight_decay=1e-5)
    gpu.train()
    loss = torch.nn.functional.mse_loss(gpu(x.to(CUDA), semantic.to(CUDA)).score,
                                        torch.tensor([1.0, 4.0], device=CUDA))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before))
