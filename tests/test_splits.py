"""Split protocols: the papers' exact random splits, prompt-disjointness, K-fold, official."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.data.splits import (available_protocols, effective_seed, kfold_protocols, make_split,
                              prompt_overlap, protocol_overview, split_summary)

# First test images of CLIP-AGIQA's own split, as committed in wzczc/CLIP-AGIQA
# `datasets/AGIQA/test/test.csv` (written by its `datasets/AGIQA.py` with random_state=42).
CLIP_AGIQA_FIRST_TEST_NAMES = [
    "sd1.5_normal_027.jpg", "sd1.5_highcorr_065.jpg", "glide_normal_291.jpg",
    "DALLE2_normal_032.jpg", "sd1.5_lowstep_143.jpg", "midjourney_normal_057.jpg",
    "glide_normal_088.jpg", "midjourney_normal_030.jpg", "midjourney_lowstep_141.jpg",
    "sd1.5_lowcorr_171.jpg",
]


def agiqa_like(n_prompts: int = 300, n_generators: int = 10, drop: int = 18) -> pd.DataFrame:
    """An AGIQA-3K-shaped frame: every prompt rendered by every generator, a few rows dropped."""
    rows = [{"name": f"gen{g}_{p:03d}.jpg", "prompt": f"prompt {p}", "generator": f"gen{g}",
             "mos": float((p * 7 + g * 3) % 50) / 10}
            for g in range(n_generators) for p in range(n_prompts)]
    df = pd.DataFrame(rows)
    return df.drop(index=df.index[5:5 + drop]).reset_index(drop=True)


def ma_agiqa_reference(n: int, seed: int = 20) -> tuple[list[int], list[int], list[int]]:
    """MA-AGIQA's utils/process.py::dataset_general(type_='random'), line for line."""
    sel_num = list(range(0, n))
    random.seed(seed)
    random.shuffle(sel_num)
    return (sel_num[:int(n * 0.7)], sel_num[int(n * 0.7):int(n * 0.8)], sel_num[int(n * 0.8):])


def positions(split: pd.Series, part: str) -> set[int]:
    return set(np.flatnonzero((split == part).to_numpy()).tolist())


def test_ma_agiqa_matches_the_released_code_and_counts():
    df = agiqa_like()
    assert len(df) == 2982
    split = make_split(df, "ma_agiqa")
    train, val, test = ma_agiqa_reference(len(df))
    assert positions(split, "train") == set(train)
    assert positions(split, "val") == set(val)
    assert positions(split, "test") == set(test)
    assert split.value_counts().to_dict() == {"train": 2087, "val": 298, "test": 597}


def test_ma_agiqa_seed_replaces_20_and_leaves_global_random_alone():
    df = agiqa_like(50, 4, 0)
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    split = make_split(df, "ma_agiqa", seed=7)
    assert random.random() == expected_next
    assert positions(split, "test") == set(ma_agiqa_reference(len(df), seed=7)[2])
    assert not split.equals(make_split(df, "ma_agiqa"))


def test_clip_agiqa_matches_sklearn_and_counts():
    df = agiqa_like()
    split = make_split(df, "clip_agiqa")
    _, test_rows = train_test_split(df, test_size=0.2, random_state=42)
    assert set(df.index[split == "test"]) == set(test_rows.index)
    assert split.value_counts().to_dict() == {"train": 2385, "test": 597}
    other = make_split(df, "clip_agiqa", seed=1)
    _, test_rows = train_test_split(df, test_size=0.2, random_state=1)
    assert set(df.index[other == "test"]) == set(test_rows.index)


def test_split_keeps_the_frame_index():
    df = agiqa_like(30, 3, 0)
    df.index = [f"row{i}" for i in range(len(df))]
    for protocol in ("ma_agiqa", "clip_agiqa", "prompt_disjoint", "prompt_disjoint_k3_f1"):
        split = make_split(df, protocol)
        assert split.index.equals(df.index) and split.name == "split"
        assert set(split) <= {"train", "val", "test"}


def test_prompt_disjoint_has_no_shared_prompt_and_70_10_20_prompt_shares():
    df = agiqa_like()
    split = make_split(df, "prompt_disjoint")
    overlap = prompt_overlap(df, split)
    assert (overlap["shared_prompts"] == 0).all()
    assert (overlap["second_images_with_seen_prompt"] == 0).all()
    prompts = df.groupby(split)["prompt"].nunique()
    assert prompts.to_dict() == {"train": 210, "val": 30, "test": 60}
    assert split.equals(make_split(df, "prompt_disjoint", seed=0))
    assert not split.equals(make_split(df, "prompt_disjoint", seed=1))


def test_prompt_disjoint_uses_prompt_id_when_present():
    """AIGCIQA2023 layout: 2,400 images, prompt index (i % 400) // 4, no prompt text."""
    i = np.arange(2400)
    df = pd.DataFrame({"name": [f"{k}.png" for k in i], "prompt": "", "prompt_id": (i % 400) // 4,
                       "generator": [f"g{k // 400}" for k in i], "mos": i % 17 * 1.0})
    split = make_split(df, "prompt_disjoint")
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not set(df.prompt_id[split == a]) & set(df.prompt_id[split == b])
    assert df.groupby(split)["prompt_id"].nunique().to_dict() == {"train": 70, "val": 10, "test": 20}


def test_kfold_test_folds_cover_every_prompt_once():
    df = agiqa_like(103, 3, 0)
    seen = []
    for protocol in kfold_protocols(5):
        split = make_split(df, protocol, seed=3)
        overlap = prompt_overlap(df, split)
        assert (overlap["shared_prompts"] == 0).all()
        counts = df.groupby(split)["prompt"].nunique()
        # test ~ 1/5 of prompts; val ~ 1/8 of the rest; i.e. ~ 70/10/20 for K = 5
        assert counts["test"] in (20, 21)
        assert counts["val"] == round((103 - counts["test"]) / 8)
        seen.extend(df.prompt[split == "test"].unique())
    assert sorted(seen) == sorted(df.prompt.unique())


@pytest.mark.parametrize("protocol", ["prompt_disjoint_k1_f0", "prompt_disjoint_k5_f5"])
def test_kfold_bad_numbers_are_user_errors(protocol):
    with pytest.raises(AgiqaError, match="K >= 2"):
        make_split(agiqa_like(10, 2, 0), protocol)


def test_official_split_and_its_errors():
    df = agiqa_like(10, 2, 0)
    with pytest.raises(AgiqaError, match="no official split"):
        make_split(df, "official")
    df["official_split"] = ["train", "val", "test", "train"] * 5
    split = make_split(df, "official")
    assert split.tolist() == df["official_split"].tolist() and split.name == "split"
    df.loc[3, "official_split"] = "training"
    with pytest.raises(AgiqaError, match="other than train/val/test"):
        make_split(df, "official")


def test_unknown_protocol_lists_valid_ones():
    with pytest.raises(AgiqaError, match="ma_agiqa, clip_agiqa, prompt_disjoint"):
        make_split(agiqa_like(10, 2, 0), "random")


def test_prompt_splits_need_prompts():
    df = agiqa_like(10, 2, 0).assign(prompt="")
    with pytest.raises(AgiqaError, match="no prompts"):
        make_split(df, "prompt_disjoint")
    assert available_protocols(df) == ["ma_agiqa", "clip_agiqa"]
    df.loc[0, "prompt"] = "one prompt"
    with pytest.raises(AgiqaError, match="19 of 20 rows have an empty"):
        make_split(df, "prompt_disjoint")


def test_random_splits_leak_prompts_and_summaries_add_up():
    df = agiqa_like()
    overview = protocol_overview(df, available_protocols(df))
    assert list(overview.index) == ["ma_agiqa", "clip_agiqa", "prompt_disjoint",
                                    "prompt_disjoint_k5_f0"]
    assert (overview[["n_train", "n_val", "n_test"]].sum(axis=1) == len(df)).all()
    assert overview.loc["ma_agiqa", "test_prompts_seen_in_train"] > 250
    assert overview.loc["prompt_disjoint", "test_prompts_seen_in_train"] == 0
    summary = split_summary(df, make_split(df, "ma_agiqa"))
    assert summary["n_images"].sum() == len(df)
    assert summary.loc["train", "n_generators"] == 10


def test_effective_seed_defaults():
    assert effective_seed("ma_agiqa") == 20 and effective_seed("clip_agiqa") == 42
    assert effective_seed("prompt_disjoint_k5_f2") == 0 and effective_seed("official") is None
    assert effective_seed("ma_agiqa", 3) == 3


@pytest.mark.real_data
def test_real_agiqa3k_counts_and_clip_agiqa_reference(agiqa3k_root):
    from agiqa_lib.data.datasets import load_dataset

    df = load_dataset("agiqa3k", root=agiqa3k_root, check_files=False)
    ma = make_split(df, "ma_agiqa").value_counts().to_dict()
    assert ma == {"train": 2087, "val": 298, "test": 597}
    clip = make_split(df, "clip_agiqa")
    assert clip.value_counts().to_dict() == {"train": 2385, "test": 597}
    test_names = set(df.loc[clip == "test", "name"])
    assert set(CLIP_AGIQA_FIRST_TEST_NAMES) <= test_names
    disjoint = make_split(df, "prompt_disjoint")
    assert (prompt_overlap(df, disjoint)["shared_prompts"] == 0).all()
