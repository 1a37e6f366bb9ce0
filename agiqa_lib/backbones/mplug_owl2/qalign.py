"""Q-Align (OneAlign) zero-shot quality scores on the same mPLUG-Owl2 code.

Q-Align (``q-future/one-align``) is mPLUG-Owl2 with other weights. Its score (Q-Align
``q_align/evaluate/scorer.py:26-60``): prompt ``USER: How would you rate the quality of this
image?\\n<|image|>\\nASSISTANT: The quality of the image is`` (line 30); the images squared
with the mean colour and processed at 448 px (lines 54-56); the logits at the LAST position
for the first token of each level word excellent, good, fair, poor, bad (``ids[1]`` after the
BOS, line 32); softmax over those five; the expectation with level weights. scorer.py weighs
1, 0.75, 0.5, 0.25, 0 (a [0, 1] score); the paper, the README's ``wa5`` and the hub model's
own ``score()`` (``q_align/model/modeling_mplug_owl2.py:273``) weigh 5, 4, 3, 2, 1 (a [1, 5]
score). This module reports the [1, 5] score; the [0, 1] one is (score - 1) / 4, so both rank
images identically. The softmax is computed in float32 from the model's logits (the
release: in fp16). Note: the hub model's ``score()`` formats its prompt as ``... The image
of the quality is`` (its ``.format`` arguments are out of order, line 274); the scorer.py
prompt is used here.
"""

from __future__ import annotations

import os
import warnings

import pandas as pd
import torch
from PIL import Image

from agiqa_lib.backbones.mplug_owl2.loading import QALIGN_MODEL_ID, load_mplug_owl2, stable_model_id
from agiqa_lib.backbones.mplug_owl2.processing import (MPLUGOwl2Processor, level_token_ids,
                                                       tokenizer_image_token)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.progress import progress_bar

QALIGN_PROMPT = ("USER: How would you rate the quality of this image?\n<|image|>\n"
                 "ASSISTANT: The quality of the image is")  # scorer.py:30
LEVELS = ("excellent", "good", "fair", "poor", "bad")  # scorer.py:32
LEVEL_WEIGHTS = (5.0, 4.0, 3.0, 2.0, 1.0)  # modeling_mplug_owl2.py:273, README wa5


class QAlignScorer:
    """Q-Align quality in [1, 5] for PIL images: E[level weight] under the 5-level softmax."""

    def __init__(self, model, processor: MPLUGOwl2Processor, *, model_id: str,
                 profile: str = "full", prompt: str = QALIGN_PROMPT) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.profile = profile
        self.prompt = prompt
        self.level_ids = level_token_ids(processor.tokenizer, LEVELS)
        self.weights = torch.tensor(LEVEL_WEIGHTS)
        self.input_ids = tokenizer_image_token(prompt, processor.tokenizer)

    @torch.inference_mode()
    def level_logits(self, images: list[Image.Image]) -> torch.Tensor:
        """Logits [B, 5] of the five level tokens at the prompt's last position (float32)."""
        weight = self.model.model.vision_model.embeddings.patch_embed.weight
        pixels = self.processor.pixel_values(images).to(weight.device, weight.dtype)
        ids = torch.tensor([self.input_ids] * len(images), device=weight.device)  # [B, T]
        out = self.model(ids, images=pixels, compute_logits=False)
        last = out.last_hidden_state[:, -1]  # [B, D]: same prompt, no padding
        logits = self.model.lm_head(last)  # [B, vocab]
        return logits[:, self.level_ids].float()

    def probabilities(self, images: list[Image.Image]) -> torch.Tensor:
        """[B, 5] softmax over the five levels (excellent ... bad)."""
        return torch.softmax(self.level_logits(images), dim=-1).cpu()

    def score(self, images: list[Image.Image]) -> torch.Tensor:
        """[B] quality scores in [1, 5] (5 = excellent)."""
        return self.probabilities(images) @ self.weights


def load_qalign(profile: str = "full", model_id: str | os.PathLike | None = None, *,
                device: str = "cpu", dtype: torch.dtype | None = None,
                quantization: str | None = None) -> QAlignScorer:
    """A `QAlignScorer`: ``full`` = ``q-future/one-align`` (or `model_id`), ``tiny`` = the tiny
    random mPLUG-Owl2 of the MLLM ``tiny`` profile (tests the plumbing only)."""
    if profile == "tiny":
        if model_id is not None:
            raise AgiqaError("model_id is only used by profile 'full'; drop it or pass "
                             "profile='full'")
        from agiqa_lib.backbones.mllm import TINY_MPLUG_OWL2_ID, tiny_mplug_owl2_dir
        from agiqa_lib.backbones.mplug_owl2.tiny import build_tiny_mplug_owl2

        folder = build_tiny_mplug_owl2(tiny_mplug_owl2_dir(), seed=0)
        model, processor = load_mplug_owl2(folder, device=device, dtype=dtype)
        return QAlignScorer(model, processor, model_id=TINY_MPLUG_OWL2_ID, profile="tiny")
    if profile != "full":
        raise AgiqaError(f"Q-Align has profiles full and tiny, not {profile!r}")
    source = model_id or QALIGN_MODEL_ID
    model, processor = load_mplug_owl2(source, device=device, dtype=dtype,
                                       quantization=quantization)
    return QAlignScorer(model, processor, model_id=stable_model_id(source), profile="full")


def q_align_scores(df: pd.DataFrame, scorer: QAlignScorer, batch_size: int = 8,
                   progress: bool = True) -> pd.DataFrame:
    """Scores of every image of a dataset table (columns name, path): DataFrame name, score.

    Unreadable images raise the AgiqaError of `open_rgb` naming the file.
    """
    from agiqa_lib.core.io import open_rgb

    if batch_size < 1:
        raise AgiqaError(f"batch_size must be a positive integer, got {batch_size}")
    scores: list[float] = []
    paths = [str(p) for p in df["path"]]
    starts = range(0, len(paths), batch_size)
    for start in progress_bar(starts, desc="Q-Align", unit="batch", disable=not progress):
        images = [open_rgb(p) for p in paths[start:start + batch_size]]
        scores.extend(scorer.score(images).tolist())
    return pd.DataFrame({"name": df["name"].to_numpy(), "score": scores})


def q_align_records(scores: pd.DataFrame, df: pd.DataFrame, dataset: str, scorer: QAlignScorer,
                    protocols: tuple[str, ...] = ("ma_agiqa", "clip_agiqa", "prompt_disjoint"),
                    seed: int | None = None) -> list[dict]:
    """Results records (plain dicts) of the zero-shot Q-Align baseline: all images
    (``evaluation="all_images"``), then the test part of each split protocol (``all_test``):
    nothing is trained, so a split only picks the images. Keys are `ResultRecord` field names
    (``plcc_raw``, ``plcc_logistic``, ``rmse_logistic``, ``within_generator_srcc``; the scorer's
    model id in ``mllm_model_id``), so ``ResultRecord.from_dict(d)`` reads them. A protocol the
    dataset cannot form (e.g. prompt-disjoint without prompts) is skipped with a warning."""
    from agiqa_lib.data.splits import effective_seed, make_split
    from agiqa_lib.evaluation.metrics import evaluate

    columns = ["name", "mos"] + (["generator"] if "generator" in df.columns else [])
    table = df[columns].merge(scores, on="name", how="inner")
    parts = [("all", None, "all_images", table)]
    for protocol in protocols:
        try:
            split = make_split(df, protocol, seed).reindex(df.index)
        except AgiqaError as err:
            warnings.warn(f"Q-Align records: protocol {protocol} skipped ({err})", stacklevel=2)
            continue
        test_names = set(df.loc[split == "test", "name"])
        parts.append((protocol, effective_seed(protocol, seed), "all_test",
                      table[table["name"].isin(test_names)]))
    records = []
    for protocol, used_seed, evaluation, rows in parts:
        groups = rows["generator"].astype(str).to_numpy() if "generator" in rows else None
        metrics = evaluate(rows["score"].to_numpy(), rows["mos"].to_numpy(), groups=groups)
        records.append({"model": "q_align", "variant": "zero_shot", "dataset": dataset,
                        "protocol": protocol, "profile": scorer.profile, "seed": used_seed,
                        "selection": "none", "evaluation": evaluation, "n": int(metrics["n"]),
                        "srcc": metrics["srcc"], "krcc": metrics["krcc"],
                        "plcc_raw": metrics["plcc"], "plcc_logistic": metrics["plcc_logistic"],
                        "rmse_logistic": metrics["rmse_logistic"], "fit": metrics["fit"],
                        "within_generator_srcc": metrics.get("within_group_srcc"),
                        "mllm_model_id": scorer.model_id, "mllm_stand_in": False})
    return records
