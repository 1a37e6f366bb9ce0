"""Does averaging `lite` MANIQA / MA-AGIQA over the token grid's symmetries at test time help?
A probe on finished `agiqa train-ma` runs, chosen on the `ma_agiqa` val part.

`lite` trains on cached Lite0 token grids rotated by k * 90 degrees and flipped
(`ma_agiqa.data.augment`, as released for images), so all eight symmetries of the square grid
are inputs the head has learnt on; the released test scores one unrotated input. This probe
loads each run's `best_on_val` weights from its `last.safetensors` (`core.training`) and scores
the val and test parts once plainly and once as the mean over the eight symmetries. It prints
val first: the setting would be kept only if it helps on val; test is printed for the record.

    agiqa train-ma agiqa3k --root ../shared/data/AGIQA-3K --profile lite \\
        --variants maniqa released_gate --seeds 20 21 22 --out-dir OUT
    python benchmarks/probe_tta.py OUT/runs/agiqa3k_lite_ma_agiqa --threads 2
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from agiqa_lib.core.checkpoints import read_metadata
from agiqa_lib.core.paths import shared_agiqa3k_root
from agiqa_lib.core.training import TrainingState
from agiqa_lib.ma_agiqa import study
from agiqa_lib.ma_agiqa.config import MAStudyConfig
from agiqa_lib.ma_agiqa.model import MAAGIQA
from agiqa_lib.ma_agiqa.train import SELECTION, adam, new_model

RUN = re.compile(r"^(?P<variant>[a-z_]+)_seed(?P<seed>\d+)_")


def symmetries(grid: torch.Tensor) -> list[torch.Tensor]:
    """The eight rotations and flips of token grids [B, C, g, g]."""
    rotated = [torch.rot90(grid, k, dims=(2, 3)) for k in range(4)]
    return rotated + [torch.flip(r, dims=(2,)) for r in rotated]


@torch.inference_mode()
def scores(model: MAAGIQA, tokens: torch.Tensor, semantic: torch.Tensor | None, grid: int,
           average: bool, batch: int = 32) -> np.ndarray:
    """Scores of token rows [n, C, N]: plain, or the mean over the grid's eight symmetries."""
    out = []
    for start in range(0, len(tokens), batch):
        x = tokens[start:start + batch].float().unflatten(2, (grid, grid))
        sem = semantic[start:start + batch] if semantic is not None else None
        views = symmetries(x) if average else [x]
        s = torch.stack([model.forward_tokens(v.flatten(2), sem).score for v in views])
        out.append(s.mean(0))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the folder holding <variant>_seed<S>_... runs")
    parser.add_argument("--root", default=shared_agiqa3k_root(),
                        help="AGIQA-3K folder (default: ../shared/data/AGIQA-3K when present)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = sorted(p for p in args.runs.iterdir() if RUN.match(p.name)
                  and (p / "last.safetensors").is_file())
    if not runs:
        raise SystemExit(f"no finished runs (<variant>_seed<S>_*/last.safetensors) in {args.runs}")
    variants = tuple(dict.fromkeys(RUN.match(p.name)["variant"] for p in runs))
    cfg = MAStudyConfig(dataset="agiqa3k", root=args.root, profile="lite", variants=variants,
                        progress=False)
    data = study.prepare(cfg)
    mos = data.df["mos"].to_numpy()
    rows = []
    for run in runs:
        variant, seed = RUN.match(run.name)["variant"], int(RUN.match(run.name)["seed"])
        model = new_model(data, variant, seed)
        state_file = run / "last.safetensors"
        params = [p for p in model.parameters() if p.requires_grad]
        # the state's own fingerprint: the probe reads a finished run, it does not resume it
        state = TrainingState(model, adam(params, cfg.train_config(seed)),
                              fingerprint=read_metadata(state_file)["fingerprint"])
        if not state.restore(state_file) or SELECTION not in state.snapshots:
            raise SystemExit(f"{state_file}: not a training state with a {SELECTION} snapshot")
        state.load_weights(state.snapshots[SELECTION])  # every trainable tensor, or KeyError
        model.eval()
        grid = model.cfg.maniqa.grid
        for part in ("val", "test"):
            idx = data.rows(part)
            semantic = data.semantic[idx] if model.needs_semantic else None
            for average in (False, True):
                pred = scores(model, data.tokens[idx], semantic, grid, average)
                rows.append({"variant": variant, "seed": seed, "part": part,
                             "input": "8 symmetries" if average else "plain",
                             "srcc": stats.spearmanr(pred, mos[idx])[0]})
    table = pd.DataFrame(rows).pivot_table(index=["part", "variant", "seed"], columns="input",
                                           values="srcc")
    table["gain"] = table["8 symmetries"] - table["plain"]
    print(table.round(4).to_string())
    print(table.groupby(level=["part", "variant"]).mean().round(4).to_string())


if __name__ == "__main__":
    main()
