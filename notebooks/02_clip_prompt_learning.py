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
# # 02 · CLIP-AGIQA: learnable prompts on a frozen CLIP
#
# CLIP-AGIQA (Tang et al., ICPR 2024) scores an AI-generated image with a frozen CLIP. Six
# prompts "X X … X terrible.", "… bad.", "… poor.", "… average.", "… good.", "… perfect." have
# their sixteen "X" tokens replaced by **learnable context vectors** (CoOp). The image feature
# and the six prompt features, each L2-normalised, are concatenated (7 × D) and a small MLP
# (Dropout → Linear → ReLU → Dropout → Linear) regresses the mean opinion score (MOS) with an
# MSE loss. Only the context vectors and the MLP train; both CLIP encoders stay frozen.
#
# One thing to keep in mind while reading the results: the prompt features do **not** depend
# on the image. At test time the model is therefore an MLP on the image feature alone (the
# prompts only shift its first-layer bias; section 5 checks this numerically). We train an
# **image-only control** (the same head without the prompt features) to see whether the
# learnable prompts change anything, and we compare with zero-shot CLIP-IQA and with linear /
# SVR probes on the same frozen features.
#
# The released code reports the epoch with the best *test* SRCC. We report that rule
# (`best_on_test`) next to two honest ones: `last` (the final epoch) and `best_on_val`
# (the best epoch on a validation part carved from train).

# %% tags=["parameters"]
# Parameters (papermill overrides these)
dataset = "demo"          # agiqa3k, aigciqa2023, ... or demo (synthetic)
root = None               # dataset folder (demo is generated into the cache)
profile = "lite"          # CLIP weights: full (ViT-B/16 OpenAI), lite (offline), tiny (tests)
protocol = "clip_agiqa"   # split: clip_agiqa (80/20 as released), prompt_disjoint, ...
recipe = "auto"           # released (Tang et al.) or lite; auto: lite for profile lite, else released
compare_released = True   # lite recipe: also train the released recipe on the same features
epochs = None             # None: the recipe's (released 100: 1 warm-up epoch + cosine; lite 50)
n_aug_views = None        # cached augmented views per training image (None: released 8, lite 0)
seed = 0
out_dir = "outputs"       # figures in {out_dir}/figures, checkpoint in {out_dir}/checkpoints
results_path = None       # when set, one record per table row is added to this file
fast = False              # a smoke run: 96 images, 2 epochs, 1 view (tests, run_all.sh --fast)
device = "cpu"            # cpu, cuda, cuda:N, mps or auto: where CLIP extracts and training runs
precision = "auto"        # auto: fp16_as_released for full on CUDA, else fp32
augmentation = "auto"     # auto: fresh views every epoch for full (as released), cached for lite/tiny
clip_checkpoint = None    # full only: local open_clip ViT-B/16 weights instead of the hub
weights = "pretrained"    # "random": full-size architecture, random weights (pipeline check)
num_workers = None        # image-loading workers for fresh views (None: the profile's choice)
feature_scale = None      # head input times this (None: the recipe's, released 1.0, lite 22.6)
text_feature_scale = None # the text features' own scale (None: the recipe's: released as feature_scale, lite 1.0)
parallel_runs = 0         # training runs side by side in worker processes: 0 auto (CPU cores), 1 none

# %%
import pandas as pd
from IPython.display import Markdown, display

from agiqa_lib.clip_agiqa import inspect
from agiqa_lib.clip_agiqa import model as clip_agiqa
from agiqa_lib.clip_agiqa import study
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.evaluation.metrics import paired_srcc_difference
from agiqa_lib.evaluation.results import add_records
from agiqa_lib.viz import clip_agiqa as viz

pd.set_option("display.precision", 3)
cfg = ClipStudyConfig.from_mapping(globals())  # fast=True shrinks images, epochs, views, bootstrap
print(f"{cfg.dataset} / {cfg.profile} / {cfg.protocol}: {cfg.recipe} recipe, {cfg.epochs} epochs, "
      f"{cfg.n_aug_views} augmented views, seed {cfg.seed}, device {cfg.device}, head input "
      f"scale {cfg.feature_scale:g} (text features {cfg.model_config().text_scale:g})")

# %% [markdown]
# ## 1 · Data, split, quality classes and cached CLIP features
#
# The CLIP encoders are frozen, so an image's feature depends only on its (augmented) pixels.
# We compute the features once and cache them: a fixed test view (resize + centre crop) and
# `n_aug_views` random views of each training image (random-resized-crop with scale 0.08–1 and
# a horizontal flip, the released training augmentation; test images are never trained on, so
# they get none). Training then draws one cached view per image per epoch, which makes 100
# epochs take minutes instead of hours on a CPU. The `lite` recipe (section 3) trains on the
# fixed view alone (`n_aug_views = 0`); the released recipe beside it has its own views.
#
# The six quality words are assigned by cutting the train MOS at its sextiles (for AGIQA-3K
# this reproduces the released cut-points 1.231 / 2.266 / 2.749 / 3.092 / 3.456). The labels
# only name the prompts: the loss uses the raw MOS.

# %%
data = study.prepare(cfg)
if dataset == "demo":
    display(Markdown("**Synthetic demo data**: the numbers describe the simulator, not real images."))
print(f"{len(data.df)} images; split {data.split.value_counts().to_dict()}; CLIP {data.bundle.model_id}")
print(f"features: test view of every image {tuple(data.features.test.shape)}, augmented views "
      f"of the train images {None if data.features.augmented is None else tuple(data.features.augmented.shape)}")
print("cut-points:", data.cutpoints.round(3).tolist())

# %%
fig = viz.plot_bins(data.mos[data.rows("train")], data.cutpoints, clip_agiqa.QUALITY_CLASSES)
viz.save_figure(fig, "02_quality_bins", cfg.out_dir);

# %% [markdown]
# ## 2 · The model
#
# Sixteen context vectors of the text tower's width, drawn from N(0, 0.02), are shared by the
# six classes. Everything else in CLIP is frozen: compare the two parameter counts.

# %%
model = clip_agiqa.create_clip_agiqa(cfg.profile, cfg.model_config(), bundle=data.bundle)
print(inspect.parameter_counts(model))
print("head:", model.regression)

# %% [markdown]
# ### 2a · Inside the prompt: what the text tower reads
#
# The prompt of each class is first written with sixteen "X" placeholders and tokenised like
# any sentence. The embeddings of the "X" positions are then *replaced* by the learned context
# vectors; the start token, the class word, the full stop and the end token keep their fixed
# embeddings. Here is the prompt tensor of the first class, position by position: the token,
# its role, and the embedding row the text tower reads (its norm and first components; the
# context rows start as small random vectors, far shorter than word embeddings).

# %%
inspect.prompt_tokens(model, class_index=0)

# %% [markdown]
# From token ids to the head's input, with every tensor's shape: the prompt learner assembles
# `[6, L, W]` embeddings (L positions of width W), the text tower turns them into six
# D-dimensional features, and the head reads the image feature next to all six.

# %%
inspect.prompt_shapes(model)

# %% [markdown]
# The six text features themselves (first components) and how similar they are. Before
# training the context is random noise, so the six prompts differ only by their class word.

# %%
display(inspect.text_features(model))
inspect.text_feature_similarity(model)

# %% [markdown]
# ## 3 · Training CLIP-AGIQA
#
# SGD (lr 0.002, momentum 0.9, weight decay 5e-4), batch 32, one warm-up epoch at 1e-5 then a
# cosine schedule; the prompt features are recomputed through the text tower at every step.
# Without a validation part in the split (`clip_agiqa`) we train twice: on all train images
# (giving `best_on_test` and `last`) and on train minus a 10 % validation part (giving
# `best_on_val`). Training state is checkpointed, so an interrupted run resumes. On a CPU
# the two independent runs train side by side in two worker processes (`parallel_runs`),
# each giving exactly what it gives trained alone on one thread.
#
# **The recipe.** On `lite` features the released recipe underfits: unit-norm 512-d features
# give the head inputs of about 1/√512 each, and with lr 0.002 its predictions stay in a
# narrow band, below a linear probe on the same features. So `lite` trains with its own
# recipe (`recipe = "auto"` picks it for `profile = "lite"`), chosen on a validation part
# only: `feature_scale = 22.6` (inputs of order one), `text_feature_scale = 1.0` (the six text
# features, the same for every image, stay at unit norm, so the head's input dropout on them
# adds little image-independent noise), `n_aug_views = 0` (train on the fixed view) and
# `epochs = 50`. It changes the optimisation, not what the model can express (section 5
# folds either into one MLP). Beside it we train CLIP-AGIQA once more **with the released
# recipe on the same features** (head input scale 1, 100 epochs, 8 cached augmented views,
# extracted first): one run on all train images, as released (`best_on_test` and `last`);
# its rows are labelled "released recipe". The three runs share the two workers: one trains
# the released run while the other trains the `lite` recipe's two shorter runs. `full` uses
# the released recipe alone.

# %%
clip_run, clip_model, released = study.train_with_released(data)
print("epochs chosen:", clip_run.best_epochs)
if released is not None:
    print(f"released recipe: {released.data.cfg.epochs} epochs, {released.data.cfg.n_aug_views} "
          f"augmented views, head input scale {released.data.cfg.feature_scale:g}; epochs "
          f"chosen {released.run.best_epochs}")

# %%
fig = viz.plot_learning_curves(clip_run.histories, clip_run.best_epochs)
viz.save_figure(fig, "02_learning_curves", cfg.out_dir);

# %% [markdown]
# ## 4 · What did the prompts learn?
#
# For each learned context vector we list the vocabulary tokens nearest to it (Euclidean
# distance in the token-embedding space, as CoOp does). Learned vectors usually sit far from
# every real word, so read these as a curiosity rather than as a sentence.

# %%
inspect.nearest_tokens(clip_model, k=3)

# %% [markdown]
# After training, the six text features are still one fixed set of vectors, whatever the image:

# %%
inspect.text_feature_similarity(clip_model)

# %% [markdown]
# ## 5 · The prompts fold into a bias
#
# The head's first layer computes `W [x; t₁ … t₆] + b = W_x x + (W_t t + b)`. The text
# features `t` are the same for every image, so `W_t t + b` is a constant: a new bias. In eval
# mode (dropout off) CLIP-AGIQA is exactly an MLP on the image feature whose first bias has
# absorbed the six text features. We build that MLP from the trained weights and compare the
# two models' outputs on the test images: the difference is float rounding.

# %%
difference = inspect.folded_bias_check(clip_model, data.features.test[data.rows("test")])
print(f"max |CLIP-AGIQA(x) - folded MLP(x)| over {len(data.rows('test'))} test images: {difference:.1e}")

# %% [markdown]
# ## 6 · Controls and baselines
#
# * **Image-only control**: the same head on the image feature alone, trained the same way.
# * **Zero-shot CLIP-IQA**: softmax over "Good photo." / "Bad photo." (meaningful only with a
#   contrastively trained CLIP, i.e. `full`; `lite` has random projections).
# * **Ridge / SVR probes**: regressors on the frozen test-view features of the train images.

# %%
control_run, _ = study.train(data, cfg, use_text=False)
baselines = study.baselines(data)

# %% [markdown]
# ## 7 · Results
#
# SRCC / PLCC / KRCC on the test part with 95 % bootstrap intervals over test images; `rmse_logistic` is
# after the 4-parameter logistic mapping; `epoch` is the epoch a selection rule picked. Rows
# whose intervals overlap are not distinguishable on this test set.

# %%
runs = {"clip_agiqa": clip_run, "image_only_control": control_run}
predictions = study.collect_predictions(baselines, runs)
table = study.evaluate(data, predictions, runs)
shown, shown_predictions = table, dict(predictions)
if released is not None:
    shown = pd.concat([table, released.table.assign(model="clip_agiqa (released recipe)")],
                      ignore_index=True)
    shown_predictions.update({("clip_agiqa (released recipe)", rule): p
                              for (_, rule), p in released.predictions.items()})
viz.save_figure(viz.plot_results(shown), "02_results", cfg.out_dir)
shown

# %% [markdown]
# Do the learnable prompts help? The paired bootstrap below resamples the test images once
# for both models, so shared test-set luck cancels: an interval that contains 0 means the
# prompts made no measurable difference over the same head on the image feature alone.

# %%
test_mos = data.mos[data.rows("test")]
pd.DataFrame({rule: paired_srcc_difference(
    predictions[("clip_agiqa", rule)], predictions[("image_only_control", rule)],
    test_mos, n_boot=cfg.n_boot, seed=cfg.seed) for rule in clip_run.predictions}).T

# %% [markdown]
# With the `lite` recipe, the same paired bootstrap for CLIP-AGIQA under its recipe minus
# CLIP-AGIQA under the released recipe (`last` epoch of each): how much of the gap to the
# probes was the recipe.

# %%
if released is not None:
    display(pd.DataFrame({"last": paired_srcc_difference(
        predictions[("clip_agiqa", "last")], released.predictions[("clip_agiqa", "last")],
        test_mos, n_boot=cfg.n_boot, seed=cfg.seed)}).T)

# %%
labels = {f"{m}" if s == "none" else f"{m} / {s}": p for (m, s), p in shown_predictions.items()}
fig = viz.plot_predictions(labels, test_mos)
viz.save_figure(fig, "02_pred_vs_mos", cfg.out_dir);

# %% [markdown]
# ## 8 · Save the results and a checkpoint
#
# Each table row becomes one record of the results file (notebook 05 gathers them). The
# CLIP-AGIQA weights of the *last* epoch (the rule that never looks at the test set) are saved
# as safetensors; `agiqa score --checkpoint …` scores any folder of images with them.

# %%
if cfg.results_path is not None:
    add_records(study.records(table, data, predictions), cfg.results_path)
    if released is not None:
        add_records(study.records(released.table, released.data, released.predictions),
                    cfg.results_path)
    print(f"added {len(shown)} records to the results file")
checkpoint = clip_agiqa.save_checkpoint(clip_model, study.checkpoint_path(cfg),
                                        extra_metadata={"dataset": cfg.dataset, "protocol": cfg.protocol,
                                                        "epochs": cfg.epochs, "selection": "last"})
print("checkpoint:", checkpoint.relative_to(cfg.out))

# %%
from agiqa_lib.scoring import load_scorer, score_images

scores = score_images(load_scorer(checkpoint), data.df["path"].iloc[data.rows("test")[:8]].tolist(), progress=False)
scores.scores.assign(mos=data.mos[data.rows("test")[:8]])
