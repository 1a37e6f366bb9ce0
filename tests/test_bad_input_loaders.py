"""Damaged score files give one sentence naming the file (and line); doubtful scores warn.

Every loader reads its tables through `_common.read_table`, so each failure mode is built once
for AGIQA-3K's data.csv and once more through each other loader to show it is routed there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.data.datasets import load_dataset
from test_datasets import (AGIQA3K_HEADER, AGIQA3K_NAMES, write_agiqa3k, write_aigciqa2023,
                           write_aigiqa20k, write_koniq, write_spaq)

GOOD_ROWS = [f"{name},prompt {i},,,,{1 + i / 2},0.2,{2 + i / 4},0.3"
             for i, name in enumerate(AGIQA3K_NAMES)]


def agiqa3k_with(tmp_path, content: bytes):
    """An AGIQA-3K folder (images present) whose data.csv holds `content`."""
    root = write_agiqa3k(tmp_path / "ds")
    (root / "data.csv").write_bytes(content)
    return root


def csv_bytes(rows, header=AGIQA3K_HEADER) -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode()


@pytest.mark.parametrize("row, fields", [("{name},a,,,,1.0,0.2,2.0,0.3,EXTRA", 10),
                                         ("{name},a,,,,1.0,0.2", 7)])
def test_ragged_row_names_file_and_line(tmp_path, row, fields):
    rows = GOOD_ROWS[:2] + [row.format(name=AGIQA3K_NAMES[2])] + GOOD_ROWS[3:]
    root = agiqa3k_with(tmp_path, csv_bytes(rows))
    with pytest.raises(AgiqaError, match=rf"data.csv' line 4 has {fields} fields but the header "
                                         r"\(line 1\) has 9 with the columns name,prompt,.*"
                                         r"double quotes"):
        load_dataset("agiqa3k", root)


def test_every_row_one_field_longer_than_header_is_not_read_shifted(tmp_path):
    """pandas would silently take the first column as the index and shift every column."""
    rows = [row + ",x" for row in GOOD_ROWS]
    root = agiqa3k_with(tmp_path, csv_bytes(rows))
    with pytest.raises(AgiqaError, match=r"line 2 has 10 fields but the header \(line 1\) has 9"):
        load_dataset("agiqa3k", root)


@pytest.mark.parametrize("content, message", [
    (b"", r"data.csv' is empty \(0 bytes\); expected a table with the columns name,prompt"),
    (b"\r\n\r\n  \r\n", r"data.csv' is empty \(blank lines only\)"),
    (csv_bytes([]), r"data.csv' has no data rows \(only a header\)"),
])
def test_empty_score_file(tmp_path, content, message):
    root = agiqa3k_with(tmp_path, content)
    with pytest.raises(AgiqaError, match=message):
        load_dataset("agiqa3k", root)


def test_latin1_file_is_refused_with_byte_and_line(tmp_path):
    rows = GOOD_ROWS[:1] + [GOOD_ROWS[1].replace("prompt 1", "café au lait")] + GOOD_ROWS[2:]
    root = agiqa3k_with(tmp_path, csv_bytes(rows).decode().encode("latin-1"))
    with pytest.raises(AgiqaError, match=r"data.csv' is not UTF-8 text: byte 0xE9 on line 3 "
                                         r"cannot be decoded .*re-save it as UTF-8"):
        load_dataset("agiqa3k", root)


def test_utf8_with_bom_and_non_ascii_prompt_is_read(tmp_path):
    rows = GOOD_ROWS[:1] + [GOOD_ROWS[1].replace("prompt 1", "café au lait")] + GOOD_ROWS[2:]
    root = agiqa3k_with(tmp_path, b"\xef\xbb\xbf" + csv_bytes(rows))
    df = load_dataset("agiqa3k", root)
    assert df["prompt"].iloc[1] == "café au lait" and df["name"].tolist() == AGIQA3K_NAMES


def test_unclosed_quote_names_the_line(tmp_path):
    rows = GOOD_ROWS[:1] + [GOOD_ROWS[1].replace("prompt 1", '"prompt 1')] + GOOD_ROWS[2:]
    root = agiqa3k_with(tmp_path, csv_bytes(rows))
    with pytest.raises(AgiqaError, match=r"data.csv' has broken quoting in the record starting "
                                         r"on line 3"):
        load_dataset("agiqa3k", root)


def test_mos_outside_documented_range_warns_with_count(tmp_path):
    rows = [GOOD_ROWS[0].replace(",1.0,0.2,", ",7.5,0.2,"),
            GOOD_ROWS[1].replace(",1.5,0.2,", ",-0.5,0.2,"), *GOOD_ROWS[2:]]
    root = agiqa3k_with(tmp_path, csv_bytes(rows))
    with pytest.warns(UserWarning, match=r"2 of 4 value\(s\) of 'mos_quality' lie outside "
                                         r"AGIQA-3K's documented range 0-5 \(e.g. "
                                         r"AttnGAN_normal_000.jpg: 7.5, AttnGAN_normal_001.jpg: "
                                         r"-0.5\)"):
        df = load_dataset("agiqa3k", root)
    assert df["mos"].tolist()[:2] == [7.5, -0.5]  # kept: a warning, not a silent change


def test_duplicated_names_warn_with_counts(tmp_path):
    rows = GOOD_ROWS + [GOOD_ROWS[0], GOOD_ROWS[0], GOOD_ROWS[2]]
    root = agiqa3k_with(tmp_path, csv_bytes(rows))
    with pytest.warns(UserWarning, match=r"lists 2 image name\(s\) more than once \(5 rows; e.g. "
                                         r"AttnGAN_normal_000.jpg x3, sd1.5_lowstep_000.jpg x2\)"):
        df = load_dataset("agiqa3k", root)
    assert len(df) == 7


def test_clean_file_gives_no_warning(tmp_path, recwarn):
    load_dataset("agiqa3k", agiqa3k_with(tmp_path, csv_bytes(GOOD_ROWS)))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_first_listed_image_missing_reports_real_count(tmp_path):
    root = agiqa3k_with(tmp_path, csv_bytes(GOOD_ROWS))
    (root / "images" / AGIQA3K_NAMES[0]).unlink()
    with pytest.raises(AgiqaError, match=r"1 of 4 images listed by the score file are missing "
                                         r"from '.*images' \(3 found; first missing: "
                                         r"AttnGAN_normal_000.jpg\)"):
        load_dataset("agiqa3k", root)


def test_images_split_over_two_folders_pick_the_fuller_one(tmp_path):
    root = agiqa3k_with(tmp_path, csv_bytes(GOOD_ROWS))
    (root / "images" / AGIQA3K_NAMES[0]).rename(root / AGIQA3K_NAMES[0])  # 1 in root, 3 in images/
    with pytest.raises(AgiqaError, match=r"1 of 4 images .* missing from '.*images' \(3 found"):
        load_dataset("agiqa3k", root)


# --------------------------------------------------------- the other loaders use the same reader

def test_koniq_ragged_and_out_of_range(tmp_path):
    root = write_koniq(tmp_path / "ds", sets=False)
    path = root / "koniq10k_scores_and_distributions.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2] + ",9"] + lines[3:]) + "\n")
    with pytest.raises(AgiqaError, match=r"koniq10k_scores_and_distributions.csv' line 3 has 11 "
                                         r"fields but the header \(line 1\) has 10"):
        load_dataset("koniq10k", root)
    path.write_text("\n".join(lines[:2] + [lines[2].replace(",3.6,", ",36,")] + lines[3:]) + "\n")
    with pytest.warns(UserWarning, match=r"1 of 3 value\(s\) of 'MOS' lie outside KonIQ-10k's "
                                         r"documented range 1-5 \(e.g. 10007357496.jpg: 36\)"):
        load_dataset("koniq10k", root)


def test_koniq_latin1(tmp_path):
    root = write_koniq(tmp_path / "ds", scores=False)
    path = root / "koniq10k_distributions_sets.csv"
    path.write_bytes(path.read_bytes().replace(b"training", b"entra\xeene"))
    with pytest.raises(AgiqaError, match=r"koniq10k_distributions_sets.csv' is not UTF-8 text: "
                                         r"byte 0xEE on line 2"):
        load_dataset("koniq10k", root)


def test_aigiqa20k_empty_csv_bad_xlsx_and_shared_names(tmp_path):
    root = write_aigiqa20k(tmp_path / "ds")
    (root / "info_val.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(AgiqaError, match=r"info_val.xlsx' is not a readable Excel workbook"):
        load_dataset("aigiqa20k", root)
    pd.DataFrame({"name": ["DALLE2_0000.png"], "prompt": ["a cow"], "mos": [2.2]}).to_excel(
        root / "info_val.xlsx", index=False)
    with pytest.raises(AgiqaError, match=r"1 image name\(s\) appear in more than one AIGIQA-20K "
                                         r"score sheet .*first: DALLE2_0000.png"):
        load_dataset("aigiqa20k", root, check_files=False)
    (root / "info_test.csv").write_bytes(b"")
    with pytest.raises(AgiqaError, match=r"info_test.csv' is empty \(0 bytes\); expected a table "
                                         r"with the columns name,prompt"):
        load_dataset("aigiqa20k", root)


def test_aigiqa20k_duplicate_within_a_sheet_warns(tmp_path):
    root = write_aigiqa20k(tmp_path / "ds")
    train = pd.read_csv(root / "info_train.csv")
    pd.concat([train, train.iloc[[0]]]).to_csv(root / "info_train.csv", index=False)
    with pytest.warns(UserWarning, match=r"info_train.csv' lists 1 image name\(s\) more than once "
                                         r"\(2 rows; e.g. DALLE2_0000.png x2\)"):
        load_dataset("aigiqa20k", root)


def test_spaq_empty_sheet_and_out_of_range(tmp_path):
    root = write_spaq(tmp_path / "ds", mos=(41.5, 130.0))
    with pytest.warns(UserWarning, match=r"1 of 2 value\(s\) of 'MOS' lie outside SPAQ's "
                                         r"documented range 0-100 \(e.g. 00002.jpg: 130\)"):
        load_dataset("spaq", root)
    sheet = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    pd.DataFrame().to_excel(sheet, index=False)
    with pytest.raises(AgiqaError, match=r"scores.xlsx' holds no table; expected a header row "
                                         r"with the columns Image name,MOS"):
        load_dataset("spaq", root)


def test_aigciqa2023_damaged_mat_and_out_of_range(tmp_path):
    root = write_aigciqa2023(tmp_path / "ds", images=False)
    mos = np.full((2400, 1), 50.0)
    mos[[3, 9]] = 140.0
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz1.mat", {"MOSz": mos})
    with pytest.warns(UserWarning, match=r"2 of 2400 value\(s\) of 'mos_quality' lie outside "
                                         r"AIGCIQA2023's documented range 0-100 \(e.g. 3.png: 140, "
                                         r"9.png: 140\)"):
        load_dataset("aigciqa2023", root, check_files=False)
    (root / "DATA" / "MOS" / "mosz1.mat").write_bytes(b"")
    with pytest.raises(AgiqaError, match=r"could not read MATLAB file '.*mosz1.mat' \(.*\); "
                                         r"expected the official MATLAB v5 file"):
        load_dataset("aigciqa2023", root, check_files=False)


def test_aigciqa2023_prompt_csv_ragged(tmp_path):
    root = write_aigciqa2023(tmp_path / "ds", prompt_place="DATA", prompt_format="csv",
                             images=False)
    path = root / "DATA" / "AIGCIQA2023_Prompts.csv"
    lines = path.read_text().splitlines()
    lines[5] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AgiqaError, match=r"AIGCIQA2023_Prompts.csv' line 6 has 7 fields but the "
                                         r"first row \(line 1\) has 6"):
        load_dataset("aigciqa2023", root, check_files=False)
