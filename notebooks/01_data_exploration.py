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
# # 01 · Data exploration: scores, generators, splits and a no-pixel baseline
#
# Before training anything we look at the data the models will learn from: how the mean opinion
# scores (MOS) are distributed, how strongly they depend on *which generator* made the image,
# how quality relates to text-image alignment, and what the best and worst images look like.
# Then we compare the split protocols used by the papers and compute the **generator-mean
# baseline**, which predicts an image's quality from its generator alone. It tells us how much
# of a reported SRCC needs no look at the pixels at all.
#
# Every figure is shown here and saved to `{out_dir}/figures/`.

# %% tags=["parameters"]
# Parameters (papermill overrides these)
dataset = "demo"       # agiqa3k, aigciqa2023, aigiqa20k, koniq10k, spaq or demo
root = None            # dataset folder (demo is generated into the cache)
target = None          # score column used as MOS (dataset default when None)
out_dir = "outputs"    # figures go to {out_dir}/figures
profile = "lite"       # unused here (no model); accepted so run_all.sh can pass it
device = "cpu"         # unused here (no model); accepted so run_all.sh can pass it
fast = False           # smaller bootstrap and image grid for tests
results_path = None    # when set, the baseline rows are added to this results file
weights = "pretrained"  # unused here (no model); accepted so run_all.sh can pass it

# %%
import pandas as pd
from IPython.display import Markdown, display

from agiqa_lib.data import splits
from agiqa_lib.data.datasets import dataset_targets, load_dataset
from agiqa_lib.evaluation import baselines
from agiqa_lib.evaluation.results import add_records
from agiqa_lib.viz import exploration as viz

pd.set_option("display.precision", 3)
pd.set_option("display.max_columns", 30)
target = target or dataset_targets(dataset)[0]

# %% [markdown]
# ## 1 · Load the dataset
#
# `load_dataset` reads the dataset's official score file and returns one row per image with
# `name`, `path`, `mos` (the chosen target), `prompt`, `generator` and the original score
# columns. The `demo` dataset is **synthetic**: procedurally drawn images from simulated
# generators, with MOS from a documented formula plus simulated rater noise. It exercises
# every step of the study, but its numbers say nothing about real generated images.

# %%
df = load_dataset(dataset, root=root, target=target)
if dataset == "demo":
    display(Markdown("**Synthetic demo data**: numbers below describe the simulator, not real images."))
print(f"{len(df)} images, {df['generator'].nunique()} generators, {df['prompt'].nunique()} prompts; MOS = {target}")
df.drop(columns="path").head()

# %% [markdown]
# ## 2 · Score distributions
#
# Each image was rated by many people; the MOS is their mean and the std their disagreement.
# A wide MOS range makes ranking easier; a large std means the labels themselves are noisy,
# which caps how high any model's correlation can go.

# %%
fig = viz.plot_score_distributions(df)
viz.save_figure(fig, "01_score_distributions", out_dir);

# %% [markdown]
# ## 3 · Quality per generator
#
# If generators differ a lot in median quality, a model can score well just by recognising the
# generator (its style, resolution or artefacts) without judging the individual image.

# %%
fig = viz.plot_generator_boxplots(df)
viz.save_figure(fig, "01_generator_boxplots", out_dir);

# %% [markdown]
# ## 4 · Quality vs alignment
#
# AGIQA datasets score *perceptual quality* and *text-image alignment* separately. A strong
# correlation between them would mean the two questions are hard to tell apart for raters.

# %%
fig = viz.plot_quality_vs_alignment(df)
viz.save_figure(fig, "01_quality_vs_alignment", out_dir);

# %% [markdown]
# ## 5 · Best and worst images
#
# The top row shows the highest-MOS images, the bottom row the lowest, with generator and
# prompt. Looking at them is the quickest way to see what raters punished.

# %%
fig = viz.plot_best_worst(df, n=4 if fast else 6)
viz.save_figure(fig, "01_best_worst", out_dir);

# %% [markdown]
# ## 6 · Split protocols and prompt overlap
#
# MA-AGIQA shuffles rows with Python's `random.seed(20)` and cuts 70/10/20; CLIP-AGIQA uses
# `train_test_split(test_size=0.2, random_state=42)` with no validation part. Both are random
# over *images*, so the same prompt (rendered by several generators) lands in train and test.
# The prompt-disjoint protocols split by prompt instead; `prompt_disjoint_k5_f0` is the first
# fold of a 5-fold prompt-disjoint study. The table counts test prompts already seen in train.

# %%
protocols = splits.available_protocols(df)
splits.protocol_overview(df, protocols)

# %%
splits.split_summary(df, splits.make_split(df, "ma_agiqa"))

# %% [markdown]
# ## 7 · The generator-mean baseline
#
# Each test image is predicted by the mean train MOS of its generator. `srcc_ci` / `plcc_ci`
# are bootstrap 95 % intervals over test images; `within_prompt_srcc` is the SRCC among the
# images of one prompt, averaged over prompts. Any model in notebooks 02-05 should be read
# against this row: on real AGIQA-3K under the `ma_agiqa` split it already reaches an SRCC of
# about 0.73.

# %%
if baselines.has_generators(df):
    table = baselines.generator_mean_baseline(df, [p for p in protocols if p != "official"], n_boot=200 if fast else 1000)
    viz.save_figure(viz.plot_baseline(table), "01_generator_mean_baseline", out_dir)
    display(table)
else:
    table = None
    print("this dataset names no generators: the generator-mean baseline does not apply")

# %% [markdown]
# The results file collects every run of the study; notebook 05 reads it. We add the
# baseline rows (model `generator_mean`, no weights, no selection rule).

# %%
if results_path is not None and table is not None:
    add_records(baselines.baseline_records(table, dataset, target), results_path)
    print(f"added {len(table)} generator-mean records to the results file")
