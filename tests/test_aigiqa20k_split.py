"""AIGIQA-20K splits: MA-AGIQA's released split shuffles only the 14,000 rows of info_train
(seed 20 -> 9,800/1,400/2,800) whatever else the folder holds; the official partition stays
available; a row without a score never enters a train/val/test part."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.data.datasets import load_dataset
from agiqa_lib.data.splits import assigned_rows, make_split, release_order

GENERATORS = ["DALLE2", "SD1.5", "PixArt-alpha", "LCM_SDXL", "Midjourney", "Kandinsky"]


def write_sheets(root: Path, n_train: int, n_val: int, n_test: int,
                 val_mos: bool = True, test_mos: bool = True) -> Path:
    """The official score sheets (documented format: name,prompt,mos; `{Generator}_{NNNN}.png`)
    with `n_*` rows each; val/test without their MOS column when the labels are withheld."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = 0
    for split, n, with_mos in (("train", n_train, True), ("val", n_val, val_mos),
                               ("test", n_test, test_mos)):
        if n == 0:
            continue
        names = [f"{GENERATORS[i % len(GENERATORS)]}_{start + i:05d}.png" for i in range(n)]
        table = pd.DataFrame({"name": names, "prompt": [f"prompt {(start + i) // 4}"
                                                         for i in range(n)]})
        if with_mos:
            table["mos"] = np.round(rng.uniform(0.5, 4.5, n), 4)
        table.to_csv(root / f"info_{split}.csv", index=False)
        start += n
    return root


def test_ma_agiqa_split_is_the_released_one_of_info_train(tmp_path):
    """14,000 train rows + 2,000 val + 4,000 test (with MOS): the released 9,800/1,400/2,800
    of the training sheet, row for row as `dataset_general` shuffles it."""
    root = write_sheets(tmp_path / "aigiqa20k", 14000, 2000, 4000)
    df = load_dataset("aigiqa20k", root, check_files=False)
    split = make_split(df, "ma_agiqa")
    counts = split.value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (9800, 1400, 2800)
    assert split[df["official_split"] != "train"].isna().all()  # val/test sheets unused
    # the release: pic_paths = info_train names; random.seed(20); random.shuffle(range(N))
    names = pd.read_csv(root / "info_train.csv")["name"].tolist()
    order = list(range(len(names)))
    random.seed(20)
    random.shuffle(order)
    released = {"train": order[:9800], "val": order[9800:11200], "test": order[11200:]}
    by_name = dict(zip(df["name"], split))
    for part, rows in released.items():
        assert {by_name[names[i]] for i in rows} == {part}
    # the val loader reads val in this shuffled order
    assert [df["name"].iloc[i] for i in release_order(df, "ma_agiqa")][9800:11200] == \
        [names[i] for i in released["val"]]


def test_ma_agiqa_split_ignores_withheld_sheets_and_official_keeps_the_partition(tmp_path):
    with_labels = make_split(load_dataset("aigiqa20k", write_sheets(tmp_path / "a", 140, 20, 40),
                                          check_files=False), "ma_agiqa")
    without = load_dataset("aigiqa20k", write_sheets(tmp_path / "b", 140, 20, 40, val_mos=False,
                                                     test_mos=False), check_files=False)
    split = make_split(without, "ma_agiqa")
    assert split.value_counts().to_dict() == {"train": 98, "test": 28, "val": 14}
    assert split.iloc[:140].tolist() == with_labels.iloc[:140].tolist()  # same whatever else
    assert split.iloc[140:].isna().all()
    # only the train sheet: the same split again
    only_train = make_split(load_dataset("aigiqa20k", write_sheets(tmp_path / "c", 140, 0, 0),
                                         check_files=False), "ma_agiqa")
    assert only_train.tolist() == split.iloc[:140].tolist()
    official = make_split(load_dataset("aigiqa20k", tmp_path / "a", check_files=False),
                          "official")
    assert official.value_counts().to_dict() == {"train": 140, "test": 40, "val": 20}


def test_official_split_refuses_rows_without_a_score(tmp_path):
    df = load_dataset("aigiqa20k", write_sheets(tmp_path / "ds", 30, 10, 20, test_mos=False),
                      check_files=False)
    with pytest.raises(AgiqaError, match=r"20 rows without a score .*20 in test.*ma_agiqa"):
        make_split(df, "official")


@pytest.mark.parametrize("protocol", ["clip_agiqa", "prompt_disjoint", "prompt_disjoint_k5_f0",
                                      "ma_agiqa"])
def test_rows_without_a_score_never_enter_a_part(tmp_path, protocol):
    df = load_dataset("aigiqa20k", write_sheets(tmp_path / "ds", 80, 20, 20, val_mos=False,
                                                test_mos=False), check_files=False)
    df = df.drop(columns="ma_agiqa_pool")  # without the loader's marker: every scored row
    split = make_split(df, protocol)
    assert split[df["mos"].isna()].isna().all()
    assert split[df["mos"].notna()].isin(["train", "val", "test"]).all()
    kept, kept_split = assigned_rows(df, split)
    assert len(kept) == 80 and kept["mos"].notna().all()
    assert kept.index.tolist() == list(range(80)) and kept_split.index.tolist() == list(range(80))


def test_complete_datasets_split_exactly_as_before():
    """Frames where every row has a score keep the earlier assignment (AGIQA-3K's 2087/298/597)."""
    df = pd.DataFrame({"name": [f"im{i}.png" for i in range(2982)], "mos": np.linspace(0, 5, 2982),
                       "prompt": [f"p{i // 10}" for i in range(2982)]})
    split = make_split(df, "ma_agiqa")
    assert split.value_counts().to_dict() == {"train": 2087, "test": 597, "val": 298}
    order = list(range(2982))
    random.Random(20).shuffle(order)
    assert (split.iloc[order[:2087]] == "train").all() and (split.iloc[order[2385:]] == "test").all()
    kept, _ = assigned_rows(df, split)
    assert kept is df
