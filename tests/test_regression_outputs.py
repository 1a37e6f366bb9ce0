"""Outputs of the small models on fixed inputs equal the recorded ones (open_clip's habit).

The reference files in tests/data/regression/ were written by tests/make_regression_data.py;
all but mPLUG-Owl2's were recorded from revision 711b529, before the package layout changed.
A failure means a change moved numbers: if that was intended, regenerate the file (see that
script) and explain the change in the commit message.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from make_regression_data import CASES, DATA, RTOL, compute, differences, load_api


@pytest.fixture(scope="module")
def api():
    return load_api("current")


def test_every_case_has_a_small_reference_file():
    stored = {p.stem for p in DATA.glob("*.safetensors")}
    assert stored == set(CASES)
    assert all(p.stat().st_size < 16_000 for p in DATA.glob("*.safetensors"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_the_recorded_ones(name, api):
    expected = load_file(str(DATA / f"{name}.safetensors"))
    actual = compute(name, api)
    assert set(actual) == set(expected), f"{name}: outputs {sorted(actual)} != {sorted(expected)}"
    for key, (diff, relative) in differences(actual, expected).items():
        assert actual[key].shape == expected[key].shape, f"{name}/{key}: shape changed"
        # relative to the tensor's scale: robust to CPU thread counts, tight enough for refactors
        assert relative <= RTOL, f"{name}/{key}: max |diff| {diff:.3g} ({relative:.3g} of scale)"
        assert torch.isfinite(actual[key]).all()


def test_released_and_clean_tablock_differ():
    """The MANIQA case would not notice a lost `clean_tablock` flag if both gave one result."""
    stored = load_file(str(DATA / "maniqa_tiny.safetensors"))
    assert (stored["released_f"] - stored["clean_f"]).abs().max() > 1e-3
