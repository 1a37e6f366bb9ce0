"""`agiqa split`: writes name,split for a dataset; user errors are one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from agiqa_lib.cli import main
from agiqa_lib.data.splits import make_split

HEADER = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"


@pytest.fixture
def tiny_agiqa3k(tmp_path):
    """An AGIQA-3K score file (CRLF, official columns) for 40 images; no image files needed."""
    lines = [HEADER] + [
        f"{gen}_{i:03d}.jpg,prompt {i},,,,{(i * 37 % 50) / 10},0.5,{(i * 11 % 50) / 10},0.6"
        for gen in ("sd1.5_normal", "glide_normal") for i in range(20)]
    (tmp_path / "data.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return tmp_path


@pytest.mark.parametrize("protocol", ["ma_agiqa", "clip_agiqa", "prompt_disjoint",
                                      "prompt_disjoint_k4_f1"])
def test_split_writes_name_split_csv(tiny_agiqa3k, tmp_path, capsys, protocol):
    out = tmp_path / "out" / "split.csv"
    code = main(["split", "agiqa3k", "--root", str(tiny_agiqa3k), "--protocol", protocol,
                 "--seed", "3", "-o", str(out)])
    assert code == 0
    written = pd.read_csv(out)
    assert list(written.columns) == ["name", "split"]
    source = pd.read_csv(tiny_agiqa3k / "data.csv")
    assert written["name"].tolist() == source["name"].tolist()
    assert written["split"].tolist() == make_split(source.assign(generator=""), protocol, seed=3).tolist()
    assert "wrote" in capsys.readouterr().out


def test_target_does_not_change_the_split(tiny_agiqa3k, tmp_path):
    outs = []
    for target in ("mos_quality", "mos_align"):
        outs.append(tmp_path / f"{target}.csv")
        assert main(["split", "agiqa3k", "--root", str(tiny_agiqa3k), "--protocol", "ma_agiqa",
                     "--target", target, "-o", str(outs[-1])]) == 0
    assert outs[0].read_text() == outs[1].read_text()


@pytest.mark.parametrize("args, message", [
    (["--protocol", "random"], "unknown split protocol 'random'"),
    (["--protocol", "official"], "no official split"),
    (["--protocol", "ma_agiqa", "--target", "beauty"], "unknown target 'beauty'"),
])
def test_user_errors_are_one_line_exit_2(tiny_agiqa3k, tmp_path, capsys, args, message):
    out = tmp_path / "split.csv"
    code = main(["split", "agiqa3k", "--root", str(tiny_agiqa3k), *args, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_wrong_root_is_a_user_error(tmp_path, capsys):
    code = main(["split", "agiqa3k", "--root", str(tmp_path / "nowhere"), "--protocol",
                 "ma_agiqa", "-o", str(tmp_path / "s.csv")])
    assert code == 2
    assert "agiqa split: error:" in capsys.readouterr().err


@pytest.mark.real_data
def test_real_agiqa3k_through_the_console_entry(agiqa3k_root, tmp_path):
    out = tmp_path / "split.csv"
    done = subprocess.run([sys.executable, "-m", "agiqa_lib.cli", "split", "agiqa3k", "--root",
                           str(agiqa3k_root), "--protocol", "ma_agiqa", "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = pd.read_csv(out)["split"].value_counts().to_dict()
    assert counts == {"train": 2087, "val": 298, "test": 597}
