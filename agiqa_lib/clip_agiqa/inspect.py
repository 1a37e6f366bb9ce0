"""Look inside CLIP-AGIQA (notebook 02): the prompt's anatomy and the folded text features.

- `prompt_tokens(model)`: the tokenised prompt "X X ... X {class}." position by position.
- `prompt_shapes(model)`: every tensor from token ids to text features, with its shape.
- `text_features(model)` / `text_feature_similarity(model)`: the six text features.
- `nearest_tokens(model)`: the vocabulary tokens nearest each learned context vector;
  `parameter_counts(model)`: trainable vs frozen parameters.
- `folded_bias_check(model, image_features)`: the text features do not depend on the image,
  so in eval mode the head equals an MLP on the image feature whose first-layer bias absorbed
  them (`fold_text_into_bias`); returns the largest difference of the two outputs.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from agiqa_lib.clip_agiqa.model import ClipAgiqa
from agiqa_lib.core.errors import AgiqaError


def _prompt_learner(model: ClipAgiqa):
    if model.prompt_learner is None:
        raise AgiqaError("the image-only control has no prompts: pass a CLIP-AGIQA model "
                         "built with use_text=True")
    return model.prompt_learner


def _token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Token strings of ids, for open_clip's HFTokenizer and OpenAI's SimpleTokenizer."""
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "convert_ids_to_tokens"):
        return hf.convert_ids_to_tokens(ids)
    decoder = getattr(tokenizer, "decoder", {})
    return [decoder.get(i, f"<{i}>") for i in ids]


@torch.no_grad()
def prompt_tokens(model: ClipAgiqa, class_index: int = 0, dims: int = 3) -> pd.DataFrame:
    """The prompt tensor of class `class_index`, one row per non-padding position: token id,
    token, role, and the row of `prompt_learner()` the text tower reads (norm, first `dims`).

    The "X" placeholders are tokenised like any word, then their embeddings are replaced by
    the learned context vectors (`role` says which position is what).
    """
    learner = _prompt_learner(model)
    embeddings = learner()[class_index].float().cpu()  # [L, W]
    ids = learner.tokenized_prompts[class_index].tolist()
    used = max(i for i, token in enumerate(ids) if token != 0) + 1  # padding id 0 (both towers)
    tokens = _token_strings(model.text_tower.tokenizer, ids[:used])
    n_ctx = learner.n_ctx
    roles = (["start token"] + [f"context vector {i} (learned)" for i in range(n_ctx)]
             + [f"'{learner.class_names[class_index]}.' (fixed)"] * (used - 2 - n_ctx)
             + ["end token (pooled)" if model.text_tower.kind == "openai" else "end token"])
    rows = [{"position": i, "id": ids[i], "token": tokens[i], "role": roles[i],
             "norm": float(embeddings[i].norm()),
             **{f"e{d}": float(embeddings[i, d]) for d in range(dims)}} for i in range(used)]
    if used < len(ids):
        rows.append({"position": f"{used}..{len(ids) - 1}", "id": 0, "token": "(padding)",
                     "role": "masked / ignored"})
    return pd.DataFrame(rows).set_index("position")


@torch.no_grad()
def prompt_shapes(model: ClipAgiqa) -> pd.DataFrame:
    """Shapes of the tensors from the tokenised prompts to the regression head's input."""
    learner = _prompt_learner(model)
    n_cls, n_ctx = len(learner.class_names), learner.n_ctx
    embeddings = learner()
    text = model.text_features()
    rows = [
        ("tokenised prompts", learner.tokenized_prompts,
         f"ids of 'X X ... X {{class}}.', one row per class ({n_cls} classes)"),
        ("context vectors (prompt_learner.ctx)", learner.ctx,
         f"{n_ctx} learned vectors of the token-embedding width"
         + (", one set per class" if learner.ctx.dim() == 3 else ", shared by every class")),
        ("prompt embeddings (prompt_learner())", embeddings,
         f"start token + {n_ctx} context vectors + class word, '.', end (+ padding)"),
        ("text features", text, "text tower output, L2-normalised: ONE per class, "
                                "the same for every image"),
        ("head input", torch.empty(1, (1 + n_cls) * model.embed_dim),
         f"[image feature; {n_cls} text features] concatenated, per image"
         + _scale_note(model.config)),
    ]
    return pd.DataFrame([{"tensor": name, "shape": list(t.shape), "what": what}
                         for name, t, what in rows]).set_index("tensor")


def _scale_note(config: Any) -> str:
    """How the head input is scaled, for the shapes table ("" as released)."""
    if config.text_scale == config.feature_scale:
        return "" if config.feature_scale == 1.0 else f", times feature_scale {config.feature_scale:g}"
    return (f", image feature times feature_scale {config.feature_scale:g}, text features "
            f"times text_feature_scale {config.text_scale:g}")


@torch.no_grad()
def text_features(model: ClipAgiqa, dims: int = 8) -> pd.DataFrame:
    """The six (L2-normalised) text features: their first `dims` components, one row per class."""
    learner = _prompt_learner(model)
    feats = model.text_features().cpu()
    table = pd.DataFrame(feats[:, :dims].numpy(), index=list(learner.class_names),
                         columns=[f"d{i}" for i in range(dims)])
    table[f"... ({feats.shape[1]} dims)"] = "..."
    return table.rename_axis("class")


@torch.no_grad()
def text_feature_similarity(model: ClipAgiqa) -> pd.DataFrame:
    """Cosine similarity of the six text features to each other (class x class)."""
    learner = _prompt_learner(model)
    feats = model.text_features().cpu()
    names = list(learner.class_names)
    return pd.DataFrame((feats @ feats.T).numpy(), index=names, columns=names)


@torch.no_grad()
def fold_text_into_bias(model: ClipAgiqa) -> nn.Sequential:
    """The image-only MLP that equals CLIP-AGIQA's head in eval mode.

    The head's first layer sees [x; t_1; ...; t_6]: W [x; t] + b = W_x x + (W_t t + b), and
    t does not depend on the image, so W_t t + b is a constant: the folded bias. Dropout is
    the identity in eval mode. Input: L2-normalised image features [B, D].

    With feature scales s (image, `ClipAgiqaConfig.feature_scale`) and u (text,
    `ClipAgiqaConfig.text_scale`) the head sees [s x; u t], so the folded layer is
    (s W_x) x + (W_t (u t) + b) (s = u = 1: as released, nothing changes).
    """
    _prompt_learner(model)
    first, last = model.regression[1], model.regression[4]
    dim = model.embed_dim
    scale, text_scale = model.config.feature_scale, model.config.text_scale
    text = model.text_features().flatten()
    folded = nn.Linear(dim, first.out_features).to(first.weight.device)
    folded.weight.copy_(first.weight[:, :dim] if scale == 1.0 else first.weight[:, :dim] * scale)
    folded.bias.copy_(first.bias + first.weight[:, dim:]
                      @ (text if text_scale == 1.0 else text * text_scale))
    return nn.Sequential(folded, nn.ReLU(), copy.deepcopy(last)).eval()


@torch.no_grad()
def folded_bias_check(model: ClipAgiqa, image_features: torch.Tensor) -> float:
    """Largest |CLIP-AGIQA(x) - folded MLP(x)| over image features [B, D] (eval mode).

    About 1e-6 (float32 rounding): at test time the prompts only shift the first bias.
    """
    was_training = model.training
    model.eval()
    try:
        device = model.regression[1].weight.device
        features = image_features.to(device).float()
        full = model.score_features(features)
        folded = fold_text_into_bias(model)(F.normalize(features, dim=-1)).squeeze(-1)
        return float((full - folded).abs().max())
    finally:
        model.train(was_training)


@torch.no_grad()
def nearest_tokens(model: ClipAgiqa, k: int = 3) -> pd.DataFrame:
    """The k vocabulary tokens nearest (Euclidean, as CoOp's interpret_prompt) to each learned
    context vector: a rough reading of what the prompts encode (one row per vector)."""
    if model.prompt_learner is None:
        raise AgiqaError("the image-only control has no prompts to interpret")
    tower = model.text_tower
    vocab = (tower.model.text.config.vocab_size if getattr(tower, "kind", None) == "hf"
             else tower.model.vocab_size)
    table = tower.token_embedding(torch.arange(vocab, device=model.prompt_learner.ctx.device)).float()
    ctx = model.prompt_learner.ctx.float()
    ctx = ctx.unsqueeze(0) if ctx.dim() == 2 else ctx  # [n_cls or 1, n_ctx, W]
    decode = _token_decoder(tower)
    rows = []
    for c, class_ctx in enumerate(ctx):
        dist = torch.cdist(class_ctx, table)  # [n_ctx, vocab]
        values, ids = dist.topk(k, largest=False)
        for i in range(class_ctx.shape[0]):
            rows.append({"context": "shared" if ctx.shape[0] == 1 else model.config.class_names[c],
                         "position": i + 1,
                         "nearest": ", ".join(decode(int(t)) for t in ids[i]),
                         "distance": round(float(values[i, 0]), 4)})
    return pd.DataFrame(rows)


def _token_decoder(tower: Any):
    """id -> readable token for open_clip's HF and OpenAI (BPE) tokenizers."""
    inner = getattr(tower.tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
        return lambda i: inner.convert_ids_to_tokens(i)
    decoder = getattr(tower.tokenizer, "decoder", None)
    if decoder is not None:
        return lambda i: decoder.get(i, f"<{i}>").replace("</w>", "")
    return str


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts (the prompts + head vs the CLIP encoders)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in model.parameters()) - trainable}
