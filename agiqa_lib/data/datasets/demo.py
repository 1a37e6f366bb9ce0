"""The embedded demo dataset: SYNTHETIC images and SIMULATED opinion scores in the AGIQA-3K format.

Nothing here was made by a real text-to-image model or rated by a real person. Each image is
drawn with PIL from a short text prompt ("two red circles left of a blue star, dark background,
large shapes, outline style") by one of eight simulated "generators", each with its own habits
of technical defects (blur, noise, banding, JPEG blocking) and semantic/coherence defects
(missing or extra objects, wrong colours, swapped layout, fragmented shapes). Every prompt is
drawn by every generator (like AGIQA-3K: 300 prompts x 10 generators; the default demo has 64
prompts x 8 generators = 512 images), so prompt-disjoint splits matter. It lets the whole
study run anywhere in minutes; its numbers say nothing about real AGIQA models.

Simulated generators (per image, each defect level is drawn uniformly from the range shown,
so images of one generator differ; p_* are per-object-group / per-object probabilities):

| generator           | blur sigma | noise sigma | colour bits | JPEG quality | p_missing | p_extra | p_colour | p_swap | p_broken |
|---------------------|-----------:|------------:|------------:|-------------:|----------:|--------:|---------:|-------:|---------:|
| demo-sharp_normal   | 0-0.5      | 0-4         | 8           | 80-95        | 0.05      | 0.05    | 0.05     | 0.05   | 0.03     |
| demo-sharp_lowstep  | 0-0.8      | 8-22        | 7-8         | 70-92        | 0.10      | 0.10    | 0.10     | 0.10   | 0.25     |
| demo-sharp_lowcorr  | 0-0.6      | 0-6         | 8           | 75-95        | 0.30      | 0.25    | 0.35     | 0.40   | 0.05     |
| demo-blurry_normal  | 1.0-3.0    | 0-5         | 8           | 75-95        | 0.08      | 0.08    | 0.08     | 0.08   | 0.05     |
| demo-blurry_lowstep | 0.8-2.5    | 6-20        | 7-8         | 60-90        | 0.15      | 0.12    | 0.12     | 0.15   | 0.25     |
| demo-banded_normal  | 0-0.6      | 0-5         | 2-5         | 60-90        | 0.08      | 0.08    | 0.10     | 0.08   | 0.05     |
| demo-jpeg_normal    | 0-0.6      | 0-5         | 7-8         | 5-35         | 0.08      | 0.08    | 0.08     | 0.08   | 0.05     |
| demo-gan_normal     | 0.5-2.0    | 5-25        | 4-8         | 30-80        | 0.35      | 0.20    | 0.40     | 0.35   | 0.60     |

(blur sigma in pixels at 256 px, scaled with the image size; noise sigma on the 0-255 scale.)

Score formula (see `true_scores`; all severities s in [0, 1]):

| term      | definition                                                                            |
|-----------|---------------------------------------------------------------------------------------|
| s_blur    | blur sigma / 3                                                                        |
| s_noise   | noise sigma / 30                                                                      |
| s_band    | (8 - colour bits) / 6                                                                 |
| s_jpeg    | (90 - JPEG quality) / 80, clipped                                                     |
| technical | (1 - 0.75 s_blur)(1 - 0.65 s_noise)(1 - 0.5 s_band)(1 - 0.6 s_jpeg)                   |
| coherence | 1 - 0.4 * (fraction of drawn objects that are fragmented)                             |
| appeal    | 0.85 + 0.15 * (mean object/background luminance contrast)                             |
| quality   | 0.2 + 4.5 * technical * coherence * appeal + taste_q                                  |
| fidelity  | 1 - 0.6 missing_frac - 0.25 [group vanished] - 0.12 n_extra - 0.3 wrong_colour_frac   |
|           |   - 0.25 [layout swapped] - 0.25 broken_frac - 0.15 s_blur, clipped to [0, 1]         |
| alignment | 0.3 + 4.3 * fidelity^2 + taste_a                                                      |

taste_q, taste_a ~ N(0, 0.2) per image stand for what a formula cannot capture. Then 15
simulated raters score every image: rating = clip(true + rater bias + N(0, 0.6), 0, 5) with
rater bias ~ N(0, 0.25) fixed per rater; `mos_*` is the mean and `std_*` the standard
deviation of the 15 ratings, on AGIQA-3K's 0-5 scale. Every random draw is seeded.

Files written: `data.csv` (AGIQA-3K columns and CRLF line endings, names
`{generator}_{NNN}.jpg`, NNN = prompt index), `images/`, `latents.csv` (each image's defects and
noise-free scores, for teaching) and `demo.json` (the parameters; present only when complete).
The simulated world itself (scenes, generators, rendering, raters) is `demo_world`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa_lib.data.datasets import agiqa3k
from agiqa_lib.data.datasets.demo_world import (GENERATORS, N_RATERS, RATER_BIAS_SD, TASTE_SD,
                                                 corrupt, describe, rate, render, sample_scene,
                                                 true_scores)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.paths import cache_dir
from agiqa_lib.core.progress import progress_bar

VERSION = 1
MARKER = "demo.json"
STALE_TMP_SECONDS = 3600
# 64 prompts x 8 generators: sized so the whole demo study runs in under 8 minutes on 2 CPU
# cores (75 prompts, 600 images, took 8.3-8.9 min; benchmarks/PROFILE.md, "Demo size").
DEFAULT_N_IMAGES = 512


def _params(n_images: int, image_size: int, seed: int) -> dict:
    """Everything that determines the generated files (compared on reuse)."""
    return {"version": VERSION, "n_images": n_images, "image_size": image_size, "seed": seed}


def default_demo_root(n_images: int = DEFAULT_N_IMAGES, image_size: int = 256,
                      seed: int = 0) -> Path:
    """Cache folder of the demo with these parameters: `cache_dir()/demo/v{VERSION}-{hash}`."""
    params = _params(n_images, image_size, seed)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "demo" / f"v{VERSION}-{digest}"


def _generate(folder: Path, n_images: int, image_size: int, seed: int) -> None:
    """Write `images/`, `data.csv` (AGIQA-3K schema, CRLF) and `latents.csv` into `folder`."""
    n_prompts = math.ceil(n_images / len(GENERATORS))
    scenes = [sample_scene(np.random.default_rng([seed, 0, p])) for p in range(n_prompts)]
    rater_bias = np.random.default_rng([seed, 1]).normal(0.0, RATER_BIAS_SD, N_RATERS)
    width = max(3, len(str(n_prompts - 1)))
    jobs = [(g, p) for g in range(len(GENERATORS)) for p in range(n_prompts)][:n_images]
    (folder / "images").mkdir()
    rows, latents = [], []
    for g, p in progress_bar(jobs, desc="demo images", leave=False):
        profile, scene = GENERATORS[g], scenes[p]
        rng = np.random.default_rng([seed, 2, g, p])
        drawn, defects = corrupt(scene, profile, rng, image_size)
        name = f"{profile.name}_{p:0{width}d}.jpg"
        render(drawn, defects, image_size, rng).save(folder / "images" / name, quality=defects.jpeg)
        quality, alignment = true_scores(scene, drawn, defects, image_size)
        quality += rng.normal(0.0, TASTE_SD)
        alignment += rng.normal(0.0, TASTE_SD)
        mos_q, std_q = rate(quality, rater_bias, rng)
        mos_a, std_a = rate(alignment, rater_bias, rng)
        rows.append({"name": name, "prompt": describe(scene), "adj1": scene.background,
                     "adj2": scene.size, "style": scene.style, "mos_quality": mos_q,
                     "std_quality": std_q, "mos_align": mos_a, "std_align": std_a})
        latents.append({"name": name, **asdict(defects), "n_broken": sum(defects.broken),
                        "quality_true": quality, "align_true": alignment})
    table = pd.DataFrame(rows).sort_values("name")
    table.to_csv(folder / "data.csv", index=False, lineterminator="\r\n", float_format="%.6f")
    latent_table = pd.DataFrame(latents).drop(columns=["broken"]).sort_values("name")
    latent_table.to_csv(folder / "latents.csv", index=False, float_format="%.6f")


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temp folders of generations of `root` killed more than an hour ago."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)


def make_demo_dataset(root: str | Path, n_images: int = DEFAULT_N_IMAGES,
                      image_size: int = 256, seed: int = 0) -> Path:
    """Generate the synthetic demo dataset into `root` (reused when already complete there).

    Written into a temporary sibling folder first and renamed onto `root` at the end, so a
    killed run never leaves a folder that looks complete. Returns the absolute root.
    """
    if n_images < 1 or image_size < 32:
        raise AgiqaError(f"demo dataset needs n_images >= 1 and image_size >= 32 "
                         f"(got n_images={n_images}, image_size={image_size})")
    root = Path(root).expanduser().resolve()
    params = _params(n_images, image_size, seed)
    if (root / MARKER).is_file():
        found = json.loads((root / MARKER).read_text()).get("params")
        if found != params:
            raise AgiqaError(f"'{root}' already holds a demo dataset made with {found}, not "
                             f"{params}; choose another folder or delete it")
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AgiqaError(f"cannot generate the demo dataset into '{root}': it exists and is not "
                         f"an empty folder or a complete demo dataset (no {MARKER})")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _generate(tmp, n_images, image_size, seed)
        marker = {"params": params, "synthetic": True, "generators": [g.name for g in GENERATORS]}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        if root.is_dir():
            root.rmdir()
        os.rename(tmp, root)
    except OSError:
        if not (root / MARKER).is_file():
            raise
        # Another process finished the same dataset first: keep theirs.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def load(root: str | Path | None, target: str | None = None,
         check_files: bool = True) -> pd.DataFrame:
    """The demo dataset as a frame (via the AGIQA-3K loader); generated on first use.

    `root=None` uses the default cache folder; a `root` without a finished demo is generated
    with the default parameters.
    """
    folder = default_demo_root() if root is None else Path(root).expanduser().resolve()
    if not (folder / MARKER).is_file():
        make_demo_dataset(folder)
    return agiqa3k.load(folder, target=target, check_files=check_files, dataset="demo")
