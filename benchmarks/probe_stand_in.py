"""Could a better `lite` semantic stand-in help MA-AGIQA? A val-only probe on cached features.

The `lite` stand-in (`backbones.lite_semantic`) is MiniLM reading a random projection of
Lite0's pooled ImageNet features with each question, so whatever it knows about an image it
learnt from the same frozen Lite0 whose maps MANIQA reads. This probe asks whether its two
vectors carry quality information the tokens do not: RBF SVRs (and ridge) fitted on the
`ma_agiqa` train part on (a) the cached Lite0 tokens pooled over the grid (mean and std of
each channel), (b) the two cached stand-in vectors, (c) both, and (d) a candidate stand-in
closer to what an MLLM's answer holds, words: Lite0's five most likely ImageNet labels as a
sentence ("an image of a tabby cat, ...") read by MiniLM (mean-pooled, 384-d), alone and with
(a); scored on the val part only (test is never read). If (c) and (a) + (d) are no better than
(a), a stand-in built from the same packaged weights has nothing to add beyond re-expressing
the Lite0 features.

    python benchmarks/probe_stand_in.py --root ../shared/data/AGIQA-3K

Prints val SRCC and mean within-generator val SRCC per feature set and probe. Reads the
feature caches the study fills (notebooks 03-04 or `agiqa train-ma`): computes them if absent.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timm.data import ImageNetInfo
from transformers import AutoModel, AutoTokenizer

from agiqa_lib.backbones.iqa_backbone import image_transform
from agiqa_lib.backbones.semantic_encoder import masked_mean
from agiqa_lib.backbones.weights import create_lite0, minilm_path
from agiqa_lib.core.folding import fold_batchnorm
from agiqa_lib.core.io import open_rgb
from agiqa_lib.core.paths import shared_agiqa3k_root
from agiqa_lib.core.progress import progress_bar
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig

from probe_image_size import val_scores  # ridge and SVR fitted on train, scored on val


def feature_sets(tokens: torch.Tensor, semantic: torch.Tensor) -> dict[str, np.ndarray]:
    """{name: [N, F]}: pooled tokens (mean, std per channel), the stand-in vectors, both."""
    x = tokens.float()
    pooled = torch.cat([x.mean(2), x.std(2)], 1).numpy()
    vectors = semantic.float().flatten(1).numpy()
    return {"Lite0 tokens pooled": pooled, "stand-in vectors": vectors,
            "both": np.concatenate([pooled, vectors], 1)}


@torch.inference_mode()
def label_sentences(paths: list[str], top: int = 5, batch_size: int = 16) -> list[str]:
    """"an image of A, B, ..." from Lite0's `top` most likely ImageNet labels (224 px)."""
    classifier = fold_batchnorm(create_lite0(pretrained=True).eval())
    transform, info = image_transform(False, size=224), ImageNetInfo()
    sentences = []
    for start in progress_bar(range(0, len(paths), batch_size), desc="Lite0 labels"):
        x = torch.stack([transform(open_rgb(p)) for p in paths[start:start + batch_size]])
        for row in classifier(x.contiguous(memory_format=torch.channels_last)).topk(top).indices:
            words = [info.index_to_description(int(i)).split(",")[0] for i in row]
            sentences.append("an image of " + ", ".join(words))
    return sentences


@torch.inference_mode()
def sentence_vectors(sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """[N, 384]: MiniLM-L6 mean-pooled last hidden states of each sentence."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    encoder = AutoModel.from_pretrained(minilm_path()).eval()
    rows = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        rows.append(masked_mean(hidden, batch["attention_mask"]))
    return torch.cat(rows).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=shared_agiqa3k_root(),
                        help="AGIQA-3K folder (default: ../shared/data/AGIQA-3K when present)")
    parser.add_argument("--fast", action="store_true", help="96 images: a check of the probe")
    args = parser.parse_args()
    cfg = MAStudyConfig(dataset="agiqa3k", root=args.root, profile="lite",
                        variants=("released_gate",), progress=True, fast=args.fast)
    data = study.prepare(cfg)
    split = data.split.to_numpy()
    train, val = split == "train", split == "val"
    mos = data.df["mos"].to_numpy(dtype=float)
    generators = data.df["generator"].to_numpy()
    print(f"agiqa3k lite, ma_agiqa split: {train.sum()} train, {val.sum()} val rows (test never "
          f"read); tokens {tuple(data.tokens.shape)}, stand-in vectors "
          f"{tuple(data.semantic.shape)}")
    sets = feature_sets(data.tokens, data.semantic)
    sentences = label_sentences([str(p) for p in data.df["path"]])
    print("e.g.", "; ".join(sentences[:3]))
    sets["label sentence"] = sentence_vectors(sentences)
    sets["Lite0 tokens pooled + label sentence"] = np.concatenate(
        [sets["Lite0 tokens pooled"], sets["label sentence"]], 1)
    print("| features | probe | val SRCC | within-generator val SRCC |\n|---|---|---|---|")
    for name, features in sets.items():
        for probe, (srcc, within) in val_scores(features, mos, generators, split).items():
            print(f"| {name} | {probe} | {srcc:.4f} | {within:.4f} |", flush=True)


if __name__ == "__main__":
    main()
