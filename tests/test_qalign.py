"""Q-Align zero-shot scores on the mPLUG-Owl2 code: prompt, level tokens, softmax, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agiqa_lib.backbones.mplug_owl2.processing import IMAGE_TOKEN_INDEX, tokenizer_image_token
from agiqa_lib.backbones.mplug_owl2.qalign import (LEVEL_WEIGHTS, LEVELS, QALIGN_PROMPT,
                                                   load_qalign, q_align_records, q_align_scores)
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.evaluation.results import ResultRecord


@pytest.fixture(scope="module")
def scorer():
    return load_qalign("tiny")


@pytest.fixture
def frame(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        path = tmp_path / "images" / f"img_{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 30, 3), dtype=np.uint8)).save(path)
        rows.append({"name": path.name, "path": str(path), "mos": float(i),
                     "generator": f"g{i % 2}"})
    return pd.DataFrame(rows)


def test_prompt_levels_and_weights_are_the_released_ones(scorer):
    assert QALIGN_PROMPT == ("USER: How would you rate the quality of this image?\n<|image|>\n"
                             "ASSISTANT: The quality of the image is")
    assert LEVELS == ("excellent", "good", "fair", "poor", "bad")
    assert LEVEL_WEIGHTS == (5.0, 4.0, 3.0, 2.0, 1.0)
    tokenizer = scorer.processor.tokenizer
    for word, token_id in zip(LEVELS, scorer.level_ids):  # scorer.py:32, ids[1] after BOS
        ids = tokenizer(word).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[1] == token_id
    assert scorer.input_ids == tokenizer_image_token(QALIGN_PROMPT, tokenizer)
    assert scorer.input_ids.count(IMAGE_TOKEN_INDEX) == 1


def test_scores_are_the_softmax_expectation_of_the_last_logits(scorer, one_torch_thread):
    images = [Image.fromarray(np.full((16, 24, 3), v, dtype=np.uint8)) for v in (10, 128, 250)]
    scores = scorer.score(images)
    assert scores.shape == (3,) and ((scores >= 1) & (scores <= 5)).all()
    pixels = scorer.processor.pixel_values(images)
    ids = torch.tensor([scorer.input_ids] * 3)
    with torch.no_grad():
        logits = scorer.model(ids, images=pixels).logits[:, -1]  # [3, vocab]
    chosen = logits[:, scorer.level_ids]
    by_hand = (chosen.exp() / chosen.exp().sum(-1, keepdim=True)) @ torch.tensor(
        [5.0, 4.0, 3.0, 2.0, 1.0])
    assert torch.allclose(scores, by_hand, atol=1e-5)
    assert torch.allclose(scorer.probabilities(images).sum(-1), torch.ones(3), atol=1e-6)
    single = torch.cat([scorer.score([im]) for im in images])
    assert torch.allclose(scores, single, atol=1e-5)


@pytest.mark.filterwarnings("ignore:metrics are NaN", "ignore:within-group SRCC is NaN")
def test_scores_table_and_records(scorer, frame, one_torch_thread):
    scores = q_align_scores(frame, scorer, batch_size=3, progress=False)
    assert list(scores.columns) == ["name", "score"] and len(scores) == 8
    assert scores["name"].tolist() == frame["name"].tolist()
    with pytest.warns(UserWarning, match="prompt_disjoint skipped"):
        records = q_align_records(scores, frame, "unit", scorer,
                                  protocols=("ma_agiqa", "prompt_disjoint"))
    assert [r["protocol"] for r in records] == ["all", "ma_agiqa"]  # no prompts here
    assert records[0]["n"] == 8 and records[0]["evaluation"] == "all_images"
    assert records[1]["evaluation"] == "all_test" and records[1]["seed"] == 20
    for record in records:
        parsed = ResultRecord.from_dict(record)  # every key is a results-file field
        assert parsed.extra == {} and parsed.model == "q_align"
        assert parsed.variant == "zero_shot" and parsed.profile == "tiny"
        assert parsed.mllm_model_id == scorer.model_id == "tiny:mplug-owl2-tiny-v1:seed0"


def test_cli_scores_a_folder_and_reports_correlations(frame, tmp_path, monkeypatch, capsys,
                                                      one_torch_thread):
    from agiqa_lib.cli import main
    from agiqa_lib.commands import qalign as command

    out = tmp_path / "scores.csv"
    monkeypatch.setattr(command, "load_dataset", lambda name, root=None: frame)
    assert main(["q-align", "unit", "--profile", "tiny", "--batch-size", "4", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Q-Align scores of 8 images" in printed and "SRCC" in printed and "RANDOM" in printed
    table = pd.read_csv(out)
    assert len(table) == 8 and table["score"].between(1, 5).all()


def test_full_profile_without_weights_is_a_clear_error(no_network, frame, capsys):
    from agiqa_lib.cli import main

    with pytest.raises(AgiqaError, match=r"`full` profile needs the mPLUG-Owl2 checkpoint "
                                         r"'q-future/one-align'.*hf download"):
        load_qalign("full")
    images = frame.loc[0, "path"].rsplit("/", 1)[0]
    assert main(["q-align", "folder", "--root", images, "--profile", "full"]) == 2
    assert "q-future/one-align" in capsys.readouterr().err
    with pytest.raises(AgiqaError, match="only used by profile 'full'"):
        load_qalign("tiny", model_id="q-future/one-align")
