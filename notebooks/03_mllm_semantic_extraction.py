# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · MLLM semantic vectors: two questions, one pooled vector each
#
# MA-AGIQA adds *semantic* knowledge to a quality model by asking a multimodal large language
# model (MLLM) two questions about every image. It does **not** use the model's answer. It
# runs one forward pass over the prompt and the image, takes the hidden states of the **last
# layer** (after the final norm), and averages them over **all** positions, text tokens and
# image tokens alike. Each image thus gets two vectors (4096-d for the paper's LLaMA-2-7B
# based model), which notebook 04 fuses with the MANIQA quality feature through a mixture of
# experts.
#
# This notebook extracts those vectors for a dataset into a resumable cache, opens up the
# sequence the mean pools over, looks at the vectors, and, where the profile's MLLM can do
# it, scores every image zero-shot with Q-Align, a quality baseline built on the same model.

# %% tags=["parameters"]
# Parameters (papermill overrides these)
dataset = "demo"       # agiqa3k, aigciqa2023, aigiqa20k, koniq10k, spaq or demo
root = None            # dataset folder (demo is generated into the cache)
profile = "lite"       # full (mPLUG-Owl2-7B, GPU), lite (CPU stand-in), tiny (random mPLUG-Owl2)
model_id = None        # full only: hub id or local folder (default MAGAer13/mplug-owl2-llama2-7b;
                       # any transformers image-text-to-text model, e.g. llava-hf/llava-1.5-7b-hf)
device = "cpu"         # cuda for the full profile (fp16 on GPU)
out_dir = "outputs"    # figures go to {out_dir}/figures, the summary to {out_dir}
fast = False           # a few images per generator, for tests
results_path = None    # when set, the zero-shot Q-Align records are added to this file
q_align = True         # score the images with Q-Align (full and tiny profiles only)
q_align_model_id = None  # full only: default q-future/one-align
weights = "pretrained"  # "random" (full only): the tiny mPLUG-Owl2 through the full loader

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from agiqa_lib.backbones.mllm import create_mllm
from agiqa_lib.backbones.weights import random_mllm_source
from agiqa_lib.core.io import write_json
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.evaluation.results import ResultRecord, add_records
from agiqa_lib.ma_agiqa.semantic import (QUESTIONS, extract_semantic_vectors, question_cosine,
                                         read_manifest, semantic_cache_entry, summary_record)
from agiqa_lib.viz import semantic as viz

pd.set_option("display.max_colwidth", None)

# %% [markdown]
# ## 1 · The two questions
#
# The released code asks these two questions verbatim. They are phrased as judgements, but no
# judgement is read out: what matters is how the question steers the model's internal state
# while it looks at the image.

# %%
pd.DataFrame({"question": list(QUESTIONS.values())}, index=list(QUESTIONS))

# %% [markdown]
# ## 2 · The model
#
# MA-AGIQA used **mPLUG-Owl2-LLaMA2-7B**, and so does the `full` profile by default, on this
# library's own implementation of it (the hub checkpoint loads unchanged, no remote code): a
# ViT-L/14 at 448 px whose 1,024 patch tokens a *visual abstractor* condenses into 64 learned
# queries plus an end token, i.e. **65 visual tokens** per image, spliced into LLaMA-2 where
# the prompt says `<|image|>`. Its **modality-adaptive** layers keep separate layer norms and
# key/value projections for visual and text positions, so the two kinds of tokens are
# processed by partly different weights inside one sequence.
#
# * `full`: mPLUG-Owl2 by default; any transformers image-text-to-text model can be chosen by
#   `model_id` (e.g. `llava-hf/llava-1.5-7b-hf`, 576 image tokens, its own chat template).
# * `tiny`: a tiny *random* mPLUG-Owl2 (same architecture, small widths, still 65 visual
#   tokens) saved and loaded back through the same loader: it tests the code path, its vectors
#   mean nothing.
# * `lite`: a CPU **stand-in**, not a language model: EfficientNet-Lite0 image features turned
#   into a few token embeddings of the MiniLM sentence encoder, read together with the question.

# %%
if weights == "random":  # a pipeline check: the tiny random mPLUG-Owl2 through the full loader
    model_id, q_align = random_mllm_source(), False
encoder = create_mllm(profile, model_id=model_id, device=device)
if encoder.is_stand_in:
    display(Markdown("> **STAND-IN.** These vectors come from the `lite` stand-in (image "
                     "features read with the question by a small sentence encoder). They are "
                     "**not** an MLLM's judgement; use `profile=\"full\"` on a GPU for the "
                     "real thing."))
print(encoder.describe())

# %% [markdown]
# ## 3 · What the mean pools over
#
# The released prompt is `USER: {question}\n<|image|> ASSISTANT:`: the image comes **after**
# the question, without a system prompt. In a causal language model a token only sees the
# tokens before it, so image tokens placed after the question are read *in the light of* the
# question, while image tokens placed first would be identical for both questions. The table
# counts, per question, the text and image tokens of the sequence and where the image sits;
# the last column is the share of the mean that the image tokens make up.

# %%
viz.token_layout_table(encoder)

# %% [markdown]
# The same sequence drawn to scale for the first question: text tokens before the image,
# the image tokens, and the text that closes the prompt.

# %%
note = viz.title_note(encoder.is_stand_in, encoder.model_id)
layout = encoder.token_layout(QUESTIONS["semantic_content"])
fig = viz.plot_token_layout(layout, note)
viz.save_figure(fig, "03_token_layout", out_dir);

# %% [markdown]
# ## 4 · Load the dataset
#
# `load_dataset` gives one row per image with its path, MOS and generator. In `fast` mode we
# keep a few images per generator.

# %%
df = load_dataset(dataset, root=root)
if fast:
    df = df.groupby("generator", sort=False).head(3).reset_index(drop=True)
print(f"{len(df)} images from {df['generator'].nunique()} generators")

# %% [markdown]
# ## 5 · Extract the vectors
#
# One forward pass per batch and question. The result is stored once as a single float16
# array `[N, 2, D]` with a JSON manifest (file-list hash, model, profile, questions, image
# placement, stand-in flag). A killed run resumes where it stopped, and a manifest that does
# not match the request is rebuilt, never reused.

# %%
vectors = extract_semantic_vectors(df, encoder, dataset=dataset)
manifest = read_manifest(semantic_cache_entry(df, encoder))
summary = summary_record(vectors, manifest)
print(f"vectors {tuple(vectors.shape)} (images x questions x hidden size), cached")
print(manifest["note"])
print(f"speed of the run that finished the cache: {summary['images_per_s']} images/s")

# %% [markdown]
# ## 6 · PCA of the vectors, coloured by MOS
#
# Each question's vectors are projected on their own two principal axes (one shared basis
# would spend its first axis on the difference between the questions). If the vectors carry
# quality information, low- and high-MOS images should drift apart along some direction;
# notebook 04 measures how much the fusion model can actually use.

# %%
table = viz.pca_table(vectors, df)
fig = viz.plot_pca(table, "mos", note)
viz.save_figure(fig, "03_pca_mos", out_dir);

# %% [markdown]
# ## 7 · The same map, coloured by generator
#
# Clusters by generator mean the vectors recognise *who* made the image (style, resolution,
# artefacts). That helps a quality model only as far as generator identity predicts quality,
# which notebook 01's generator-mean baseline already measures.

# %%
fig = viz.plot_pca(table, "generator", note)
viz.save_figure(fig, "03_pca_generator", out_dir);

# %% [markdown]
# ## 8 · Do the two questions give different vectors?
#
# The cosine similarity between an image's two vectors shows how much the question changes
# the pooled state. Values very close to 1 mean the two "experts" of the fusion model receive
# almost the same input, so the gate has little to choose between.

# %%
similarity = question_cosine(vectors).numpy()
fig = viz.plot_question_similarity(similarity, df, note)
viz.save_figure(fig, "03_question_similarity", out_dir);

# %% [markdown]
# ## 9 · Summary
#
# The key facts go to `{out_dir}/03_semantic_summary.json` for the report notebook.

# %%
write_json(Path(out_dir) / "03_semantic_summary.json", summary)
pd.Series(summary)

# %% [markdown]
# ## 10 · A zero-shot baseline on the same model: Q-Align
#
# Q-Align (`q-future/one-align`) is mPLUG-Owl2 with weights trained to rate images. Asked
# "How would you rate the quality of this image?", it puts probability on the five level words
# *excellent, good, fair, poor, bad*; the score is their expectation with weights 5..1. Nothing
# is trained on our data, so its correlation with the MOS is a baseline for every trained model
# of notebooks 02 and 04. The records (all images, then the test part of each split protocol)
# go to the results file and appear in notebook 05 as model `q_align`. It needs the full or
# tiny mPLUG-Owl2; with `tiny` its weights are random and the numbers are a pipeline check.

# %%
if not q_align:
    print("q_align=False: skipped")
elif profile not in ("full", "tiny"):
    print(f"Q-Align needs the full or tiny mPLUG-Owl2 (profile {profile!r} has none): skipped")
else:
    from agiqa_lib.backbones.mplug_owl2.qalign import load_qalign, q_align_records, q_align_scores

    encoder = None  # free the MLLM before the second model is loaded
    scorer = load_qalign(profile, q_align_model_id, device=device)
    scores = q_align_scores(df, scorer)
    protocols = () if fast else ("ma_agiqa", "clip_agiqa", "prompt_disjoint")  # fast: too few to split
    records = [ResultRecord.from_dict(r)
               for r in q_align_records(scores, df, dataset, scorer, protocols)]
    if results_path is not None:
        add_records(records, results_path)
    display(pd.DataFrame([r.to_dict() for r in records])[
        ["model", "protocol", "evaluation", "n", "srcc", "plcc_logistic", "within_generator_srcc"]])
