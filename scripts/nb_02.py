"""Build notebooks/02_clip_prompt_learning.ipynb (run: python scripts/nb_02.py)."""

from notebook_builder import write_notebook

CELLS = [
    ("md", """# 02 · CLIP-AGIQA: learnable prompts on a frozen CLIP

CLIP-AGIQA (Tang et al., ICPR 2024) scores an AI-generated image with a frozen CLIP. Six
prompts "X X … X terrible.", "… bad.", "… poor.", "… average.", "… good.", "… perfect." have
their sixteen "X" tokens replaced by **learnable context vectors** (CoOp). The image feature
and the six prompt features, each L2-normalised, are concatenated (7 × D) and a small MLP
(Dropout → Linear → ReLU → Dropout → Linear) regresses the mean opinion score (MOS) with an
MSE loss. Only the context vectors and the MLP train; both CLIP encoders stay frozen.

One thing to keep in mind while reading the results: the prompt features do **not** depend
on the image. At test time the model is therefore an MLP on the image feature alone (the
prompts only shift its first-layer bias). We train an **image-only control** (the same head
without the prompt features) to see whether the learnable prompts change anything, and we
compare with zero-shot CLIP-IQA and with linear / SVR probes on the same frozen features.

The released code reports the epoch with the best *test* SRCC. We report that rule
(`best_on_test`) next to two honest ones: `last` (the final epoch) and `best_on_val`
(the best epoch on a validation part carved from train)."""),
    ("code", """# Parameters (papermill overrides these)
dataset = "demo"          # agiqa3k, aigciqa2023, ... or demo (synthetic)
root = None               # dataset folder (demo is generated into the cache)
profile = "lite"          # CLIP weights: full (ViT-B/16 OpenAI), lite (offline), tiny (tests)
protocol = "clip_agiqa"   # split: clip_agiqa (80/20 as released), prompt_disjoint, ...
epochs = 100              # the released schedule: 1 warm-up epoch + cosine over 100
n_aug_views = 8           # cached augmented views per training image
seed = 0
out_dir = "outputs"       # figures in {out_dir}/figures, checkpoint in {out_dir}/checkpoints
results_path = None       # when set, one record per table row is appended to this file
fast = False              # tiny settings for tests
device = "cpu"            # cpu, cuda, cuda:N, mps or auto: where CLIP extracts and training runs""",
     ["parameters"]),
    ("code", """import pandas as pd
from IPython.display import Markdown, display

from agiqa_lib.clip_agiqa import model as clip_agiqa
from agiqa_lib.clip_agiqa import study
from agiqa_lib.clip_agiqa.config import ClipStudyConfig
from agiqa_lib.evaluation.metrics import paired_srcc_difference
from agiqa_lib.evaluation.results import add_records
from agiqa_lib.viz import clip_agiqa as viz

pd.set_option("display.precision", 3)
cfg = ClipStudyConfig.from_mapping(globals())  # fast=True shrinks epochs, views, bootstrap
cfg"""),
    ("md", """## 1 · Data, split, quality classes and cached CLIP features

The CLIP encoders are frozen, so an image's feature depends only on its (augmented) pixels.
We compute the features once and cache them: a fixed test view (resize + centre crop) and
`n_aug_views` random views per image (random-resized-crop with scale 0.08–1 and a horizontal
flip, the released training augmentation). Training then draws one cached view per image per
epoch, which makes 100 epochs take minutes instead of hours on a CPU.

The six quality words are assigned by cutting the train MOS at its sextiles (for AGIQA-3K
this reproduces the released cut-points 1.231 / 2.266 / 2.749 / 3.092 / 3.456). The labels
only name the prompts: the loss uses the raw MOS."""),
    ("code", """data = study.prepare(cfg)
if dataset == "demo":
    display(Markdown("**Synthetic demo data**: the numbers describe the simulator, not real images."))
print(f"{len(data.df)} images; split {data.split.value_counts().to_dict()}; CLIP {data.bundle.model_id}")
print(f"features: test view {tuple(data.features.test.shape)}, augmented "
      f"{None if data.features.augmented is None else tuple(data.features.augmented.shape)}")
print("cut-points:", data.cutpoints.round(3).tolist())"""),
    ("code", """fig = viz.plot_bins(data.mos[data.rows("train")], data.cutpoints, clip_agiqa.QUALITY_CLASSES)
print(viz.save_figure(fig, "02_quality_bins", cfg.out_dir))"""),
    ("md", """## 2 · The model

Sixteen context vectors of the text tower's width, drawn from N(0, 0.02), are shared by the
six classes. Everything else in CLIP is frozen: compare the two parameter counts."""),
    ("code", """model = clip_agiqa.create_clip_agiqa(cfg.profile, bundle=data.bundle)
print(clip_agiqa.parameter_counts(model))
print("head:", model.regression)"""),
    ("md", """## 3 · Training CLIP-AGIQA

SGD (lr 0.002, momentum 0.9, weight decay 5e-4), batch 32, one warm-up epoch at 1e-5 then a
cosine schedule; the prompt features are recomputed through the text tower at every step.
Without a validation part in the split (`clip_agiqa`) we train twice: on all train images
(giving `best_on_test` and `last`) and on train minus a 10 % validation part (giving
`best_on_val`). Training state is checkpointed, so an interrupted run resumes."""),
    ("code", """clip_run, clip_model = study.train(data, cfg, use_text=True)
print("epochs chosen:", clip_run.best_epochs)"""),
    ("code", """fig = viz.plot_learning_curves(clip_run.histories, clip_run.best_epochs)
print(viz.save_figure(fig, "02_learning_curves", cfg.out_dir))"""),
    ("md", """## 4 · What did the prompts learn?

For each learned context vector we list the vocabulary tokens nearest to it (Euclidean
distance in the token-embedding space, as CoOp does). Learned vectors usually sit far from
every real word, so read these as a curiosity rather than as a sentence."""),
    ("code", """clip_agiqa.nearest_tokens(clip_model, k=3)"""),
    ("md", """## 5 · Controls and baselines

* **Image-only control**: the same head on the image feature alone, trained the same way.
* **Zero-shot CLIP-IQA**: softmax over "Good photo." / "Bad photo." (meaningful only with a
  contrastively trained CLIP, i.e. `full`; `lite` has random projections).
* **Ridge / SVR probes**: regressors on the frozen test-view features of the train images."""),
    ("code", """control_run, _ = study.train(data, cfg, use_text=False)
baselines = study.baselines(data)"""),
    ("md", """## 6 · Results

SRCC / PLCC / KRCC on the test part with 95 % bootstrap intervals over test images; `rmse_logistic` is
after the 4-parameter logistic mapping; `epoch` is the epoch a selection rule picked. Rows
whose intervals overlap are not distinguishable on this test set."""),
    ("code", """runs = {"clip_agiqa": clip_run, "image_only_control": control_run}
predictions = study.collect_predictions(baselines, runs)
table = study.evaluate(data, predictions, runs)
print(viz.save_figure(viz.plot_results(table), "02_results", cfg.out_dir))
table"""),
    ("md", """Do the learnable prompts help? The paired bootstrap below resamples the test images once
for both models, so shared test-set luck cancels: an interval that contains 0 means the
prompts made no measurable difference over the same head on the image feature alone."""),
    ("code", """pd.DataFrame({rule: paired_srcc_difference(
    predictions[("clip_agiqa", rule)], predictions[("image_only_control", rule)],
    data.mos[data.rows("test")], n_boot=cfg.n_boot, seed=cfg.seed) for rule in clip_run.predictions}).T"""),
    ("code", """labels = {f"{m}" if s == "none" else f"{m} / {s}": p for (m, s), p in predictions.items()}
fig = viz.plot_predictions(labels, data.mos[data.rows("test")])
print(viz.save_figure(fig, "02_pred_vs_mos", cfg.out_dir))"""),
    ("md", """## 7 · Save the results and a checkpoint

Each table row becomes one record of the results file (notebook 05 gathers them). The
CLIP-AGIQA weights of the *last* epoch (the rule that never looks at the test set) are saved
as safetensors; `agiqa score --checkpoint …` scores any folder of images with them."""),
    ("code", """if cfg.results_path is not None:
    add_records(study.records(table, data, predictions), cfg.results_path)
    print(f"added {len(table)} records to {cfg.results_path}")
checkpoint = clip_agiqa.save_checkpoint(clip_model, study.checkpoint_path(cfg),
                                        extra_metadata={"dataset": cfg.dataset, "protocol": cfg.protocol,
                                                        "epochs": cfg.epochs, "selection": "last"})
print(checkpoint)"""),
    ("code", """from agiqa_lib.scoring import load_scorer, score_images

scores = score_images(load_scorer(checkpoint), data.df["path"].iloc[data.rows("test")[:8]].tolist(), progress=False)
scores.scores.assign(mos=data.mos[data.rows("test")[:8]])"""),
]


if __name__ == "__main__":
    print(write_notebook(CELLS, "02_clip_prompt_learning.ipynb"))
