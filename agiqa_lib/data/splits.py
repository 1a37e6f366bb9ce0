"""Train/val/test split protocols: the two papers' random splits, prompt-disjoint, official.

Every protocol returns a Series of "train" / "val" / "test" indexed like the dataset frame.
The papers' random splits work on *row positions*, so the frame must keep the score file's
row order (as `agiqa_lib.data.datasets.load_dataset` returns it).

- `ma_agiqa`: MA-AGIQA's `utils/process.py::dataset_general(type_="random")`
  (wangpuyi/MA-AGIQA, read through the code search): `sel_num = list(range(len(rows)))`,
  `random.seed(set_seed)` with `set_seed: 20` from `configs/AGIQA_3k/MA_AGIQA.yaml`,
  `random.shuffle(sel_num)`; train = `sel_num[:int(N*0.7)]`, val =
  `sel_num[int(N*0.7):int(N*0.8)]`, test = `sel_num[int(N*0.8):]` (AGIQA-3K: 2087/298/597).
  `main.py` re-seeds the same way for every repeat, so all its repeats share this split.
  On AIGIQA-20K the release reads `info_train.csv` only (`dataset_general`, process.py:99), so
  only the rows of the training sheet are shuffled (the loader marks them in the column
  `ma_agiqa_pool`): 9,800/1,400/2,800 of its 14,000 rows, whatever else is in the folder.
- `clip_agiqa`: Tang et al.'s `datasets/AGIQA.py` (wzczc/CLIP-AGIQA):
  `train_test_split(data, test_size=0.2, random_state=42)`, no val (AGIQA-3K: 2385/597);
  our AGIQA-3K test part matches the `datasets/AGIQA/test/test.csv` committed there.
- `prompt_disjoint`: prompts (AIGCIQA2023: `prompt_id`) shuffled with a seeded generator
  (default seed 0) and cut 70/10/20, so no prompt appears in two parts.
- `prompt_disjoint_k{K}_f{F}`: K-fold over prompts for multi-seed studies. Fold F is test;
  of the remaining prompts, the first eighth (in the seeded order) is val and the rest train,
  so K=5 gives the same 70/10/20 shares as `prompt_disjoint` while the K test folds cover
  every prompt exactly once.
- `official`: the dataset's own split, from its `official_split` column.

A row without a score (NaN MOS: AIGIQA-20K's val/test sheets when their labels are withheld)
never enters a part: the random and prompt-based protocols leave it out before shuffling (its
split value is None), and `official` stops with an AgiqaError when a part would hold such rows.
`assigned_rows(df, split)` keeps the rows that a part took.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from agiqa_lib.core.errors import AgiqaError

PARTS = ("train", "val", "test")
PROTOCOLS = ("ma_agiqa", "clip_agiqa", "prompt_disjoint", "prompt_disjoint_k{K}_f{F}", "official")
MA_AGIQA_SEED = 20
CLIP_AGIQA_SEED = 42
PROMPT_DISJOINT_SEED = 0
PROMPT_SHARES = (0.7, 0.1, 0.2)
MA_AGIQA_POOL = "ma_agiqa_pool"  # bool column: the rows MA-AGIQA's released split draws from
KFOLD_VAL_SHARE = 1 / 8
_KFOLD = re.compile(r"prompt_disjoint_k(\d+)_f(\d+)")


def make_split(df: pd.DataFrame, protocol: str, seed: int | None = None) -> pd.Series:
    """Assign each row of `df` to "train", "val" or "test" under `protocol`.

    `seed` replaces the protocol's default seed (20 for ma_agiqa, 42 for clip_agiqa, 0 for the
    prompt-disjoint ones); `official` ignores it.
    """
    used_seed = effective_seed(protocol, seed)
    if protocol == "official":
        return _official(df)
    if protocol != "ma_agiqa" and not _KFOLD.fullmatch(protocol) \
            and protocol not in ("clip_agiqa", "prompt_disjoint"):
        raise AgiqaError(f"unknown split protocol {protocol!r}; valid protocols are "
                         f"{', '.join(PROTOCOLS)} (e.g. prompt_disjoint_k5_f0)")
    pool = _scored(df)
    if protocol == "ma_agiqa" and MA_AGIQA_POOL in df.columns:
        pool = pool & df[MA_AGIQA_POOL].fillna(False).astype(bool).to_numpy()
    rows = df[pool]
    if protocol == "ma_agiqa":
        parts = _ma_agiqa(len(rows), used_seed)
    elif protocol == "clip_agiqa":
        parts = _clip_agiqa(len(rows), used_seed)
    elif protocol == "prompt_disjoint":
        parts = _prompt_disjoint(rows, used_seed)
    else:
        k, fold = map(int, _KFOLD.fullmatch(protocol).groups())
        parts = _prompt_kfold(rows, k, fold, used_seed)
    out = pd.Series(None, index=df.index, name="split", dtype=object)
    out[pool] = parts
    return out


def release_order(df: pd.DataFrame, protocol: str, seed: int | None = None) -> np.ndarray:
    """Row positions in the order the papers' code lists them: for `ma_agiqa` the shuffled
    index list of `dataset_general` (so its val part is read by the released val loader in
    this order), otherwise the file order; rows that no part takes are left out."""
    pool = _scored(df)
    if protocol == "ma_agiqa" and MA_AGIQA_POOL in df.columns:
        pool = pool & df[MA_AGIQA_POOL].fillna(False).astype(bool).to_numpy()
    positions = np.flatnonzero(pool)
    if protocol != "ma_agiqa":
        return positions
    order = list(range(len(positions)))
    random.Random(effective_seed(protocol, seed)).shuffle(order)
    return positions[order]


def evenly_spread(df: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """`limit` rows evenly spaced over the file, re-indexed 0..n-1 (all rows when None): a
    quick look that keeps every generator of a file grouped by generator, as the datasets are."""
    if limit is None or limit >= len(df):
        return df.reset_index(drop=True)
    return df.iloc[np.linspace(0, len(df) - 1, limit).astype(int)].reset_index(drop=True)


def assigned_rows(df: pd.DataFrame, split: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """The rows a split part took (train, val or test) and their split, both re-indexed 0..n-1
    in the original order (rows without a score are dropped here)."""
    keep = split.reindex(df.index).isin(PARTS).to_numpy()
    if keep.all():
        return df, split
    return df[keep].reset_index(drop=True), split[keep].reset_index(drop=True)


def _scored(df: pd.DataFrame) -> np.ndarray:
    """Per row, whether it has a score (rows without one never enter a part)."""
    if "mos" not in df.columns:
        return np.ones(len(df), dtype=bool)
    return pd.to_numeric(df["mos"], errors="coerce").notna().to_numpy()


def effective_seed(protocol: str, seed: int | None = None) -> int | None:
    """The seed `make_split` really uses for `protocol` (its default when `seed` is None)."""
    if protocol == "official":
        return None
    if seed is not None:
        return seed
    return {"ma_agiqa": MA_AGIQA_SEED, "clip_agiqa": CLIP_AGIQA_SEED}.get(protocol,
                                                                          PROMPT_DISJOINT_SEED)


def kfold_protocols(k: int) -> list[str]:
    """The K protocol names of a K-fold prompt-disjoint study (`prompt_disjoint_k{k}_f{f}`)."""
    return [f"prompt_disjoint_k{k}_f{fold}" for fold in range(k)]


def has_prompts(df: pd.DataFrame) -> bool:
    """Whether every row carries a prompt (`prompt_id` or non-empty `prompt`)."""
    missing = _missing_prompts(df)
    return missing is not None and not missing.any()


def prompt_keys(df: pd.DataFrame) -> pd.Series:
    """The prompt identity of each row: `prompt_id` when present, else the `prompt` text."""
    missing = _missing_prompts(df)
    if missing is None or missing.all():
        raise AgiqaError("this dataset has no prompts, so prompt-based splits and overlaps "
                         "are undefined; use ma_agiqa, clip_agiqa or official")
    if missing.any():
        raise AgiqaError(f"{int(missing.sum())} of {len(df)} rows have an empty "
                         f"`{_prompt_column(df)}`; prompt-based splits need a prompt for every image")
    return df[_prompt_column(df)].astype(str)


def split_summary(df: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Per part: number of images, prompts and generators, and MOS mean/std."""
    rows = []
    for part in PARTS:
        sub = df[split.reindex(df.index) == part]
        row = {"part": part, "n_images": len(sub)}
        if has_prompts(df):
            row["n_prompts"] = sub[_prompt_column(df)].nunique()
        if "generator" in df.columns and (df["generator"].astype(str) != "").any():
            row["n_generators"] = sub["generator"].nunique()
        if "mos" in df.columns:
            row.update(mos_mean=sub["mos"].mean(), mos_std=sub["mos"].std())
        rows.append(row)
    return pd.DataFrame(rows).set_index("part")


def prompt_overlap(df: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """For each pair of parts: prompts they share, and how many images of the second part
    have a prompt seen in the first (0 everywhere for a prompt-disjoint split)."""
    keys = prompt_keys(df)
    parts = split.reindex(df.index)
    prompts = {part: set(keys[parts == part]) for part in PARTS}
    rows = []
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = prompts[first] & prompts[second]
        second_keys = keys[parts == second]
        rows.append({"parts": f"{first}-{second}", "shared_prompts": len(shared),
                     "prompts_in_second": len(prompts[second]),
                     "second_images_with_seen_prompt": int(second_keys.isin(shared).sum()),
                     "second_images": len(second_keys)})
    return pd.DataFrame(rows).set_index("parts")


def available_protocols(df: pd.DataFrame, k: int = 5) -> list[str]:
    """The protocols that apply to `df`: the papers' random splits, the prompt-disjoint ones
    (first fold of a `k`-fold study shown) when it has prompts, `official` when it has one."""
    protocols = ["ma_agiqa", "clip_agiqa"]
    if has_prompts(df):
        protocols += ["prompt_disjoint", kfold_protocols(k)[0]]
    if "official_split" in df.columns:
        protocols.append("official")
    return protocols


def protocol_overview(df: pd.DataFrame, protocols: list[str] | tuple[str, ...],
                      seed: int | None = None) -> pd.DataFrame:
    """One row per protocol: part sizes and, when the dataset has prompts, how many test
    prompts (and test images) were already seen in train."""
    rows = []
    for protocol in protocols:
        split = make_split(df, protocol, seed)
        counts = split.value_counts()
        row = {"protocol": protocol, **{f"n_{p}": int(counts.get(p, 0)) for p in PARTS}}
        if has_prompts(df):
            overlap = prompt_overlap(df, split).loc["train-test"]
            row.update(test_prompts=overlap["prompts_in_second"],
                       test_prompts_seen_in_train=overlap["shared_prompts"],
                       test_images_with_train_prompt=overlap["second_images_with_seen_prompt"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("protocol")


def _ma_agiqa(n: int, seed: int) -> np.ndarray:
    order = list(range(n))
    random.Random(seed).shuffle(order)  # same stream as random.seed(seed); random.shuffle(order)
    parts = np.empty(n, dtype=object)
    parts[order[:int(n * 0.7)]] = "train"
    parts[order[int(n * 0.7):int(n * 0.8)]] = "val"
    parts[order[int(n * 0.8):]] = "test"
    return parts


def _clip_agiqa(n: int, seed: int) -> np.ndarray:
    _, test_rows = train_test_split(np.arange(n), test_size=0.2, random_state=seed)
    parts = np.full(n, "train", dtype=object)
    parts[test_rows] = "test"
    return parts


def _shuffled_prompts(df: pd.DataFrame, seed: int) -> tuple[pd.Series, list[str]]:
    keys = prompt_keys(df)
    unique = sorted(keys.unique())
    order = np.random.default_rng(seed).permutation(len(unique))
    return keys, [unique[i] for i in order]


def _prompt_disjoint(df: pd.DataFrame, seed: int) -> np.ndarray:
    keys, prompts = _shuffled_prompts(df, seed)
    n_train = round(len(prompts) * PROMPT_SHARES[0])
    n_val = round(len(prompts) * PROMPT_SHARES[1])
    part_of = {p: "train" for p in prompts[:n_train]}
    part_of.update({p: "val" for p in prompts[n_train:n_train + n_val]})
    part_of.update({p: "test" for p in prompts[n_train + n_val:]})
    return keys.map(part_of).to_numpy(dtype=object)


def _prompt_kfold(df: pd.DataFrame, k: int, fold: int, seed: int) -> np.ndarray:
    if k < 2 or not 0 <= fold < k:
        raise AgiqaError(f"prompt_disjoint_k{k}_f{fold}: need K >= 2 and 0 <= F < K "
                         "(e.g. prompt_disjoint_k5_f0 ... prompt_disjoint_k5_f4)")
    keys, prompts = _shuffled_prompts(df, seed)
    if len(prompts) < k:
        raise AgiqaError(f"prompt_disjoint_k{k}: the dataset has only {len(prompts)} prompts, "
                         f"fewer than {k} folds")
    folds = np.array_split(np.arange(len(prompts)), k)
    in_test = set(folds[fold].tolist())
    test = [prompts[i] for i in sorted(in_test)]
    rest = [prompts[i] for i in range(len(prompts)) if i not in in_test]
    n_val = round(len(rest) * KFOLD_VAL_SHARE)
    part_of = {p: "test" for p in test}
    part_of.update({p: "val" for p in rest[:n_val]})
    part_of.update({p: "train" for p in rest[n_val:]})
    return keys.map(part_of).to_numpy(dtype=object)


def _official(df: pd.DataFrame) -> pd.Series:
    if "official_split" not in df.columns:
        raise AgiqaError("this dataset has no official split (no `official_split` column); "
                         "use --protocol ma_agiqa, clip_agiqa or prompt_disjoint")
    split = df["official_split"].astype(object)
    bad = ~split.isin(PARTS)
    if bad.any():
        examples = sorted(set(map(str, split[bad].head(3))))
        raise AgiqaError(f"`official_split` has {int(bad.sum())} values other than "
                         f"train/val/test (e.g. {examples})")
    unscored = ~_scored(df)
    if unscored.any():
        counts = split[unscored].value_counts()
        where = ", ".join(f"{int(counts[p])} in {p}" for p in PARTS if p in counts)
        raise AgiqaError(f"the official split would put {int(unscored.sum())} rows without a "
                         f"score into its parts ({where}): their labels are withheld (e.g. "
                         "AIGIQA-20K's info_val / info_test sheets without MOS), and a row "
                         "without a score never enters a train/val/test part; add the scored "
                         "sheets, or use protocol ma_agiqa (the released split of the scored "
                         "training sheet)")
    return split.rename("split")


def _prompt_column(df: pd.DataFrame) -> str:
    return "prompt_id" if "prompt_id" in df.columns else "prompt"


def _missing_prompts(df: pd.DataFrame) -> pd.Series | None:
    """Per row, whether its prompt is empty; None when the frame has no prompt column."""
    column = _prompt_column(df)
    if column not in df.columns:
        return None
    keys = df[column]
    return keys.isna() | (keys.astype(str).str.strip() == "")
