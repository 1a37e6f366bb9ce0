"""Build notebooks/03_mllm_semantic_extraction.ipynb (run: python scripts/nb_03.py)."""


from notebook_builder import write_notebook

CELLS = [
    ("md", """# 03 · MLLM semantic vectors: two questions, one pooled vector each

MA-AGIQA adds *semantic* knowledge to a quality model by asking a multimodal large language
model (MLLM) two questions about every image. It does **not** use the model's answer. It
runs one forward pass over the prompt and the image, takes the hidden states of the **last
layer** (after the final norm), and averages them over **all** positions, text tokens and
image tokens alike. Each image thus gets two vectors (4096-d for a 7B LLaMA-2 model), which
notebook 04 fuses with the MANIQA quality feature through a mixture of experts.

This notebook extracts those vectors for a dataset into a resumable cache and looks at them."""),
    ("code", """# Parameters (papermill overrides these)
dataset = "demo"       # agiqa3k, aigciqa2023, aigiqa20k, koniq10k, spaq or demo
root = None            # dataset folder (demo is generated into the cache)
profile = "lite"       # full (an HF image-text-to-text model), lite (CPU stand-in), tiny (random)
model_id = None        # full only: hub id or local folder (default llava-hf/llava-1.5-7b-hf)
device = "cpu"         # cuda for the full profile (fp16 on GPU)
out_dir = "outputs"    # figures go to {out_dir}/figures, the summary to {out_dir}
fast = False           # a few images per generator, for tests
results_path = None    # unused (nothing is trained here); accepted so run_all.sh can pass it""",
     ["parameters"]),
    ("code", """from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.core.io import write_json
from agiqa_lib.backbones.mllm import create_mllm
from agiqa_lib.ma_agiqa.semantic import (QUESTIONS, extract_semantic_vectors, question_cosine,
                                read_manifest, semantic_cache_entry, summary_record)
from agiqa_lib.viz import semantic as viz

pd.set_option("display.max_colwidth", None)"""),
    ("md", """## 1 · The two questions

The released code asks these two questions verbatim. They are phrased as judgements, but no
judgement is read out: what matters is how the question steers the model's internal state
while it looks at the image."""),
    ("code", """pd.DataFrame({"question": list(QUESTIONS.values())}, index=list(QUESTIONS))"""),
    ("md", """## 2 · The model and the prompt

MA-AGIQA used mPLUG-Owl2-LLaMA2-7B with the prompt `USER: {question}\\n<|image|> ASSISTANT:`:
the image comes **after** the question, without a system prompt, and images are padded to a
square with the processor's mean colour. The placement matters in a causal language model:
a token only sees the tokens before it, so image tokens placed after the question are read
*in the light of* the question, while image tokens placed first are identical for both
questions. Since the image tokens outnumber the text tokens (576 against about 30 for a
LLaVA-1.5-7B), mean pooling is dominated by them.

The `full` profile runs any transformers image-text-to-text model with its own chat template
(default `llava-hf/llava-1.5-7b-hf`, the closest hub model: a LLaMA-2-7B fine-tune, 4096-d),
`tiny` a small random LLaVA through the same code (it only tests the plumbing), and `lite` a
CPU **stand-in** built from packaged weights (EfficientNet-Lite0 image features turned into
a few token embeddings of the MiniLM sentence encoder, read together with the question)."""),
    ("code", """encoder = create_mllm(profile, model_id=model_id, device=device)
if encoder.is_stand_in:
    display(Markdown("> **STAND-IN.** These vectors come from the `lite` stand-in (image "
                     "features read with the question by a small sentence encoder). They are "
                     "**not** an MLLM's judgement; use `profile=\\"full\\"` on a GPU for the "
                     "real thing."))
print(encoder.describe())"""),
    ("md", """## 3 · Load the dataset

`load_dataset` gives one row per image with its path, MOS and generator. In `fast` mode we
keep a few images per generator."""),
    ("code", """df = load_dataset(dataset, root=root)
if fast:
    df = df.groupby("generator", sort=False).head(3).reset_index(drop=True)
print(f"{len(df)} images from {df['generator'].nunique()} generators")"""),
    ("md", """## 4 · Extract the vectors

One forward pass per batch and question. The result is stored once as a single float16
array `[N, 2, D]` with a JSON manifest (file-list hash, model, profile, questions, image
placement, stand-in flag). A killed run resumes where it stopped, and a manifest that does
not match the request is rebuilt, never reused."""),
    ("code", """vectors = extract_semantic_vectors(df, encoder, dataset=dataset)
manifest = read_manifest(semantic_cache_entry(df, encoder))
summary = summary_record(vectors, manifest)
print(f"vectors {tuple(vectors.shape)}, cached in {semantic_cache_entry(df, encoder)}")
print(manifest["note"])
print(f"speed of the run that finished the cache: {summary['images_per_s']} images/s")"""),
    ("md", """## 5 · PCA of the vectors, coloured by MOS

Each question's vectors are projected on their own two principal axes (one shared basis
would spend its first axis on the difference between the questions). If the vectors carry
quality information, low- and high-MOS images should drift apart along some direction;
notebook 04 measures how much the fusion model can actually use."""),
    ("code", """table = viz.pca_table(vectors, df)
note = viz.title_note(encoder.is_stand_in, encoder.model_id)
fig = viz.plot_pca(table, "mos", note)
viz.save_figure(fig, "03_pca_mos", out_dir)"""),
    ("md", """## 6 · The same map, coloured by generator

Clusters by generator mean the vectors recognise *who* made the image (style, resolution,
artefacts). That helps a quality model only as far as generator identity predicts quality,
which notebook 01's generator-mean baseline already measures."""),
    ("code", """fig = viz.plot_pca(table, "generator", note)
viz.save_figure(fig, "03_pca_generator", out_dir)"""),
    ("md", """## 7 · Do the two questions give different vectors?

The cosine similarity between an image's two vectors shows how much the question changes
the pooled state. Values very close to 1 mean the two "experts" of the fusion model receive
almost the same input, so the gate has little to choose between."""),
    ("code", """similarity = question_cosine(vectors).numpy()
fig = viz.plot_question_similarity(similarity, df, note)
viz.save_figure(fig, "03_question_similarity", out_dir)"""),
    ("md", """## 8 · Summary

The key facts go to `{out_dir}/03_semantic_summary.json` for the report notebook."""),
    ("code", """write_json(Path(out_dir) / "03_semantic_summary.json", summary)
pd.Series(summary)"""),
]


if __name__ == "__main__":
    print(write_notebook(CELLS, "03_mllm_semantic_extraction.ipynb"))
