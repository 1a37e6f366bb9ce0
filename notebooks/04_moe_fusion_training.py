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
# # 04 · MA-AGIQA: MANIQA quality features fused with MLLM semantics
#
# MA-AGIQA (Wang et al. 2024) scores an AI-generated image from two kinds of evidence:
#
# 1. **Quality features** from MANIQA: tokens of a ViT-B/8 (blocks 6-9, 784 tokens of 3072
#    channels) pass through transposed-attention blocks (attention *across channels*), a 1x1
#    conv, a Swin stage, again TABlocks, conv and Swin, and then two per-token heads: a score
#    `f` and a weight `w`. MANIQA alone scores an image by `sum(f * w) / sum(w)`; MA-AGIQA keeps
#    the 784-d vector `f * w`.
# 2. **Semantic vectors** from a multimodal LLM asked two questions (semantic content,
#    coherence; notebook 03): the mean of the last hidden states, one vector per question.
#
# A **mixture of experts** fuses them: the quality vector and the two question vectors are
# projected to 784-d "experts", a gate gives each expert a weight, and a linear layer maps the
# weighted sum to a score. In the released code the gate has **no softmax** (the paper
# describes one): its weights can be negative and need not sum to 1. We train both, plus
# ablations (MANIQA alone, one question only, a concat-MLP instead of the gate).
#
# **Protocol as released:** Adam (lr 1e-5, weight decay 1e-5), batch 8, 30 epochs,
# CosineAnnealingLR(T_max=50) stepped every *iteration*, seed 20, MSE on raw MOS, rotation and
# flip augmentation (the released "horizontal" flip is vertical), the epoch with the best val
# SRCC + PLCC is tested once. The released test loader drops 5 of AGIQA-3K's 597 test images
# (`drop_last` with shuffling); we score every test image (`all_test`) and also report the
# as-released subset (`as_released_drop_last`).
#
# **Profiles.** `full` fine-tunes the ViT end to end (GPU). `lite` (CPU) freezes an
# EfficientNet-Lite0 backbone, reads each image at its own side up to 512 px (AGIQA-3K's 512,
# the demo's 256; `full` reads 224 as released), caches its tokens, pools them to a 14 x 14
# grid, and trains a narrower MANIQA (widths 128 -> 64 -> 32) with lr 1e-4 for 10 epochs;
# its "MLLM" is a stand-in built from a sentence encoder, not a language model. `lite` numbers
# test the pipeline and the relative behaviour of the variants, not the paper's claims.

# %% tags=["parameters"]
# Parameters (papermill overrides these)
dataset = "demo"
root = None
profile = "lite"
protocol = "ma_agiqa"
variants = ["maniqa", "released_gate", "softmax_gate", "semantic_only", "coherence_only",
            "concat_mlp"]
epochs = None          # None: the profile's default (full 30, lite 10)
seeds = [20]
out_dir = "outputs"
results_path = None
fast = False           # tiny settings for tests: a 96-image subset, 2 epochs
device = "cpu"
weights = "pretrained"  # "random": full-size architecture, random weights (pipeline check)
resize = "auto"        # auto: OpenCV INTER_CUBIC as released for full, PIL bicubic for lite/tiny
val_selection = "corrected"  # or "as_released": val drop_last and a best-epoch threshold of 0
semantic_source = "mllm"     # "mllm", "official:DIR" (released .pt vectors) or an MLLM id
mllm_model_id = None   # full only: MLLM hub id or local folder (default mPLUG-Owl2-LLaMA2-7B)
vit_checkpoint = None  # full only: local timm ViT-B/8 weights instead of the hub
batch_size = None      # None: the released 8
max_steps_per_epoch = None  # cap on training steps per epoch (smoke runs)
parallel_runs = 0      # runs side by side in worker processes: 0 auto (one per CPU core), 1 none

# %%
import pandas as pd
from IPython.display import display

from agiqa_lib.core.io import open_rgb
from agiqa_lib.ma_agiqa import inspect
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.model import load_scorer
from agiqa_lib.ma_agiqa.train import new_model
from agiqa_lib.viz import ma_agiqa as viz

pd.set_option("display.precision", 4)
pd.set_option("display.max_columns", 30)
cfg = MAStudyConfig.from_mapping(globals())  # fast=True: 96 images, 2 epochs
print(f"{cfg.dataset} / {cfg.profile} / {cfg.protocol}: variants {', '.join(cfg.variants)}; "
      f"seeds {list(cfg.seeds)}; epochs {cfg.train_config(cfg.seeds[0]).epochs}; device {cfg.device}")

# %% [markdown]
# ## 1 · Data: split, frozen backbone tokens, semantic vectors
#
# The split follows the protocol (`ma_agiqa`: the released 70/10/20 shuffle with seed 20).
# For `lite`/`tiny` the frozen backbone's tokens and the MLLM vectors are computed once into
# the feature cache (a second run reads them back).

# %%
data = study.prepare(cfg)
print(data.split.value_counts().to_dict(), f"| images read at {data.image_size} px | timings (s):",
      {k: round(v, 1) for k, v in data.timings.items()})
if data.mllm_is_stand_in:
    print("NOTE: semantic vectors come from the lite STAND-IN encoder, not an MLLM's judgement.")

# %% [markdown]
# ## 2 · The model
#
# Parameters per part for this profile (the backbone is frozen except in `full`). For `full`
# the counts equal the released model's: 121,211,958 parameters reach the output.

# %%
model = new_model(data, inspect.showcase_variant(data), seed=cfg.seeds[0])
viz.parameter_table(model)

# %% [markdown]
# ### 2a · One batch through the model, stage by stage
#
# Four training images go through the untrained released-gate model (MANIQA alone when no
# chosen variant fuses the semantic vectors, which are then not prepared). Each row is one
# module as it runs, with the shape it received and the shape it returned (batch first). A
# TABlock treats each *channel* as a token: its attention map is channels x channels, and its
# input and output keep the layout `[B, C, N]` (N token positions on the grid). The conv and
# Swin stages work on the grid `[B, C, H, W]`; the two heads give one `f` and one `w` per
# position. The fusion rows show the three 'experts' and the gate.

# %%
inputs, semantic = inspect.example_batch(data, n=4)
inspect.trace_maniqa(model, inputs, semantic)

# %% [markdown]
# ### 2b · The released TABlock reshape
#
# After attention, the released TABlock turns `attn @ v`, shaped `[B, C, N]`, back into
# `[B, C, N]` with `.transpose(1, 2).reshape(B, C, N)`. A transpose followed by a reshape is not
# the identity: it reads the `[N, C]` transpose row by row. On a small tensor whose entries are
# labelled by channel `c` and token `n`, the released layout puts entries of several channels
# and tokens into one channel row; the residual `x + out` then adds them to the wrong places.
# The study reproduces the release (`clean_tablock=False`); `clean_tablock=True` keeps
# `attn @ v` as it is.

# %%
inspect.tablock_reshape_demo(channels=3, tokens=4)

# %% [markdown]
# ## 3 · The learning-rate schedule
#
# The released scheduler has T_max = 50 but is stepped after every batch, so the learning rate
# swings between its maximum and zero every 100 iterations, several times per epoch.

# %%
train_cfg = cfg.train_config(cfg.seeds[0])
fig = viz.plot_lr_schedule(train_cfg, iters_per_epoch=len(data.rows("train")) // train_cfg.batch_size)
viz.save_figure(fig, "04_lr_schedule", cfg.out_dir);

# %% [markdown]
# ## 4 · Training every variant
#
# Each run is checkpointed after every epoch under `{out_dir}/runs/` and resumes if
# interrupted; its test metrics go to the results file when `results_path` is given.
# The runs are independent, so on a CPU they train side by side, one worker process per
# core (`parallel_runs`): these small steps do not get faster with a second thread, but two
# processes take two steps in the time of one. Each run's numbers equal those of the same
# run trained alone on one thread. The bar below counts finished runs; each worker's
# per-epoch progress goes to the log of the process that started Jupyter (or papermill).

# %%
result = study.run(cfg, data)
fig = viz.plot_training_curves(result)
viz.save_figure(fig, "04_training_curves", cfg.out_dir);

# %% [markdown]
# ## 5 · Results: every test image vs the released drop_last subset
#
# SRCC and KRCC on raw predictions; PLCC and RMSE after the 4-parameter logistic fit (as the
# papers report). `within_generator_srcc` ranks images *inside* each generator, which a model
# cannot get from generator identity alone.

# %%
viz.results_table(result.table)

# %% [markdown]
# With several seeds, the mean and a 95 % t-interval over seeds (one seed: no interval;
# each run's bootstrap interval is in `result.table`, columns `srcc_ci` / `plcc_ci`).

# %%
study.seed_summary(result.table)

# %% [markdown]
# ## 6 · What the gate does
#
# The gate weights of a few test images, one column per expert, with their sum. The released
# gate is a plain linear layer: its weights can be negative and their sum is whatever training
# made it. The softmax gate (the paper's description) gives positive weights that sum to 1.

# %%
for variant in [v for v in ("released_gate", "softmax_gate") if v in cfg.variants]:
    print(variant)
    display(inspect.gate_weights(result.run(variant), n=5))

# %% [markdown]
# Gate weights of every test image, by generator. If the gate ignored the image, the boxes
# would be flat lines.

# %%
for variant in [v for v in ("released_gate", "softmax_gate") if v in cfg.variants]:
    fig = viz.plot_gate_weights(result.run(variant).predictions, f"{variant}: gate weights")
    viz.save_figure(fig, f"04_gates_{variant}", cfg.out_dir)

# %% [markdown]
# ## 7 · Predicted score vs MOS (test split)

# %%
fig = viz.plot_pred_vs_mos(result)
viz.save_figure(fig, "04_pred_vs_mos", cfg.out_dir);

# %% [markdown]
# ## 8 · A checkpoint for scoring new images
#
# The released-gate model (else the first variant trained) is saved as safetensors (weights +
# config in the metadata). `load_scorer` rebuilds it and, for a fused variant, computes the
# semantic vectors of new images with the same MLLM profile; `agiqa score` uses the same path.

# %%
path = study.save_scorer_checkpoint(result, cfg)
scorer = load_scorer(path)
sample = data.df[data.split == "test"].head(4)
images = [open_rgb(p) for p in sample["path"]]
display(sample[["name", "generator", "mos"]].assign(score=scorer.score_images(images)))
print("checkpoint:", path.relative_to(cfg.out))
