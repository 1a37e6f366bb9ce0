"""Dataset loaders on tiny fixtures in each official release format, plus the real AGIQA-3K."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from agiqa_lib.data.datasets import DATASET_NAMES, dataset_targets, load_dataset
from agiqa_lib.core.errors import AgiqaError


def image_bytes(fmt: str = "JPEG") -> bytes:
    """A tiny valid image file, written many times by the fixtures."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (120, 30, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path, names, fmt: str = "JPEG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = image_bytes(fmt)
    for name in names:
        (folder / name).write_bytes(data)


# ---------------------------------------------------------------- agiqa3k

AGIQA3K_HEADER = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"
AGIQA3K_NAMES = ["AttnGAN_normal_000.jpg", "AttnGAN_normal_001.jpg",
                 "sd1.5_lowstep_000.jpg", "sd1.5_lowstep_001.jpg"]


def write_agiqa3k(root: Path, image_folder: str | None = "images", rows=None) -> Path:
    """data.csv with CRLF line endings (as released) and images in `image_folder`."""
    root.mkdir(parents=True, exist_ok=True)
    rows = rows or [
        f"{AGIQA3K_NAMES[0]},statue of a man,,,,0.96,0.22,0.40,0.61",
        f'{AGIQA3K_NAMES[1]},"a tray of sushi, baroque style",close-up,,baroque style,1.36,0.64,0.42,0.66',
        f"{AGIQA3K_NAMES[2]},statue of a man,,,,3.10,0.50,2.90,0.70",
        f'{AGIQA3K_NAMES[3]},"a tray of sushi, baroque style",close-up,,baroque style,2.50,0.40,3.30,0.60',
    ]
    (root / "data.csv").write_bytes(("\r\n".join([AGIQA3K_HEADER, *rows]) + "\r\n").encode())
    if image_folder is not None:
        write_images(root / image_folder if image_folder != "." else root, AGIQA3K_NAMES)
    return root


@pytest.mark.parametrize("image_folder", ["images", ".", "AGIQA-3K"])
def test_agiqa3k_reads_crlf_csv_and_finds_images(tmp_path, image_folder):
    root = write_agiqa3k(tmp_path / "ds", image_folder)
    df = load_dataset("agiqa3k", root)
    assert list(df.columns[:5]) == ["name", "path", "mos", "prompt", "generator"]
    assert len(df) == 4
    assert df["name"].tolist() == AGIQA3K_NAMES  # no trailing \r anywhere
    assert df["std_align"].tolist() == [0.61, 0.66, 0.70, 0.60]
    assert df["generator"].tolist() == ["AttnGAN_normal"] * 2 + ["sd1.5_lowstep"] * 2
    assert df["mos"].tolist() == df["mos_quality"].tolist() == [0.96, 1.36, 3.10, 2.50]
    assert df["prompt"].iloc[1] == "a tray of sushi, baroque style"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    expected_dir = (root / image_folder).resolve()
    assert Path(df["path"].iloc[0]).parent == expected_dir


def test_agiqa3k_targets(tmp_path):
    root = write_agiqa3k(tmp_path / "ds")
    align = load_dataset("agiqa3k", root, target="mos_align")
    assert align["mos"].tolist() == [0.40, 0.42, 2.90, 3.30]
    assert load_dataset("agiqa3k", root, target="align")["mos"].equals(align["mos"])
    assert "mos_quality" in align.columns and "mos_align" in align.columns
    with pytest.raises(AgiqaError, match=r"unknown target 'sharpness'.*mos_align.*mos_quality"):
        load_dataset("agiqa3k", root, target="sharpness")


def test_agiqa3k_wrong_root_and_missing_score_file(tmp_path):
    with pytest.raises(AgiqaError, match="not an existing folder.*data.csv"):
        load_dataset("agiqa3k", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgiqaError, match=r"no score file.*looked for: .*empty[/\\]data.csv"):
        load_dataset("agiqa3k", tmp_path / "empty")


def test_agiqa3k_missing_column(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "data.csv").write_text("name,prompt,mos_quality\nAttnGAN_normal_000.jpg,x,1.0\n")
    with pytest.raises(AgiqaError, match=r"data.csv' lacks column\(s\) \['adj1'.*'std_align'\]"):
        load_dataset("agiqa3k", root)


def test_agiqa3k_non_numeric_mos_names_rows(tmp_path):
    rows = [f"{AGIQA3K_NAMES[0]},a,,,,0.9,0.2,0.4,0.6",
            f"{AGIQA3K_NAMES[1]},b,,,,high,0.2,0.4,0.6",
            f"{AGIQA3K_NAMES[2]},c,,,,,0.2,0.4,0.6",
            f"{AGIQA3K_NAMES[3]},d,,,,2.0,0.2,0.4,0.6"]
    root = write_agiqa3k(tmp_path / "ds", rows=rows)
    with pytest.raises(AgiqaError) as err:
        load_dataset("agiqa3k", root)
    message = str(err.value)
    assert "'mos_quality' must be numeric" in message and "2 row(s)" in message
    assert "line 3 (AttnGAN_normal_001.jpg: 'high')" in message
    assert "line 4 (sd1.5_lowstep_000.jpg" in message


def test_agiqa3k_missing_images(tmp_path):
    root = write_agiqa3k(tmp_path / "ds")
    (root / "images" / AGIQA3K_NAMES[1]).unlink()
    (root / "images" / AGIQA3K_NAMES[3]).unlink()
    with pytest.raises(AgiqaError, match=r"2 of 4 images .* missing .*AttnGAN_normal_001.jpg, "
                                         r"sd1.5_lowstep_001.jpg"):
        load_dataset("agiqa3k", root)
    assert len(load_dataset("agiqa3k", root, check_files=False)) == 4


def test_agiqa3k_no_images_anywhere(tmp_path):
    root = write_agiqa3k(tmp_path / "ds", image_folder=None)
    with pytest.raises(AgiqaError, match=r"none of the 4 images listed in .*data.csv' \(first: "
                                         r"AttnGAN_normal_000.jpg\) was found in .* any of its "
                                         r"subfolders"):
        load_dataset("agiqa3k", root)
    df = load_dataset("agiqa3k", root, check_files=False)
    assert df["mos"].notna().all()


# ---------------------------------------------------------------- aigciqa2023

def write_aigciqa2023(root: Path, prompt_place: str | None = "", images: bool = True,
                      prompt_format: str = "xlsx") -> Path:
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        (root / "DATA" / "MOS").mkdir(parents=True, exist_ok=True)
        (root / "DATA" / "STD").mkdir(parents=True, exist_ok=True)
        mos = 25 * k + 25 * rng.random((2400, 1))  # k-th aspect recognisable, all within 0-100
        scipy.io.savemat(root / "DATA" / "MOS" / f"mosz{k}.mat", {"MOSz": mos})
        scipy.io.savemat(root / "DATA" / "STD" / f"SD{k}.mat", {"SD": np.full((2400, 1), k)})
    if prompt_place is not None:
        # Official sheet: no header row, six columns, the prompt text in the third.
        table = pd.DataFrame([[f"scene{i}", "challenge", f"prompt number {i}", "obj", "t", "f"]
                              for i in range(100)])
        (root / prompt_place).mkdir(parents=True, exist_ok=True)
        if prompt_format == "xlsx":
            table.to_excel(root / prompt_place / "AIGCIQA2023_Prompts.xlsx", header=False,
                           index=False)
        else:  # the CSV copy some repositories use, with a header row
            table.set_axis(["scene", "challenge", "prompt", "obj", "type", "feeling"], axis=1).to_csv(
                root / prompt_place / "AIGCIQA2023_Prompts.csv", index=False)
    if images:
        write_images(root / "Image" / "allimg", [f"{i}.png" for i in range(2400)], "PNG")
    return root


@pytest.mark.parametrize("prompt_place, prompt_format",
                         [("", "xlsx"), ("DATA", "xlsx"), ("DATA/MOS", "csv")])
def test_aigciqa2023_official_layout(tmp_path, prompt_place, prompt_format):
    root = write_aigciqa2023(tmp_path / "ds", prompt_place, prompt_format=prompt_format)
    df = load_dataset("aigciqa2023", root)
    assert len(df) == 2400
    assert df["name"].iloc[7] == "7.png" and df["path"].iloc[7].endswith("Image/allimg/7.png")
    assert df.loc[[0, 399, 400, 2399], "generator"].tolist() == [
        "Controlnet", "Controlnet", "DALLE", "Unidiffuser"]
    assert df["generator"].value_counts().to_dict() == {g: 400 for g in [
        "Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser"]}
    assert df.loc[[0, 3, 4, 399, 400, 405, 2399], "prompt_id"].tolist() == [0, 0, 1, 99, 0, 1, 99]
    assert df.loc[5, "prompt"] == "prompt number 1" and df.loc[2399, "prompt"] == "prompt number 99"
    mat = scipy.io.loadmat(root / "DATA" / "MOS" / "mosz1.mat")["MOSz"].ravel()
    np.testing.assert_allclose(df["mos"], mat)
    assert df["mos_authenticity"].min() > 50 and df["mos_correspondence"].min() > 75
    assert (df["std_correspondence"] == 3).all()
    corr = load_dataset("aigciqa2023", root, target="correspondence", check_files=False)
    np.testing.assert_allclose(corr["mos"], corr["mos_correspondence"])


def test_aigciqa2023_without_prompt_sheet(tmp_path):
    root = write_aigciqa2023(tmp_path / "ds", prompt_place=None, images=False)
    df = load_dataset("aigciqa2023", root, check_files=False)
    assert (df["prompt"] == "").all() and df["prompt_id"].nunique() == 100


def test_aigciqa2023_errors(tmp_path):
    root = write_aigciqa2023(tmp_path / "ds", images=False)
    with pytest.raises(AgiqaError, match=r"2400 images .* missing .*allimg.*0.png"):
        load_dataset("aigciqa2023", root)
    with pytest.raises(AgiqaError, match=r"unknown target 'beauty'.*authenticity"):
        load_dataset("aigciqa2023", root, target="beauty", check_files=False)
    pd.DataFrame([["s", "c", "only prompt"]]).to_excel(root / "AIGCIQA2023_Prompts.xlsx",
                                                       header=False, index=False)
    with pytest.raises(AgiqaError, match=r"AIGCIQA2023_Prompts.xlsx' has 1 prompts; expected 100"):
        load_dataset("aigciqa2023", root, check_files=False)
    (root / "AIGCIQA2023_Prompts.xlsx").unlink()
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz2.mat", {"MOSz": np.ones((100, 1))})
    with pytest.raises(AgiqaError, match=r"mosz2.mat' holds 100 values; expected a 2400x1"):
        load_dataset("aigciqa2023", root, check_files=False)
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz2.mat", {"scores": np.ones((2400, 1))})
    with pytest.raises(AgiqaError, match=r"mosz2.mat' has no variable 'MOSz'"):
        load_dataset("aigciqa2023", root, check_files=False)
    (root / "DATA" / "MOS" / "mosz2.mat").unlink()
    with pytest.raises(AgiqaError, match=r"no authenticity MOS file .*mosz2.mat"):
        load_dataset("aigciqa2023", root, check_files=False)


# ---------------------------------------------------------------- aigiqa20k

def write_aigiqa20k(root: Path, train_format: str = "csv") -> Path:
    train = pd.DataFrame({"name": ["DALLE2_0000.png", "SD1.5_0001.png", "PixArt-alpha_0002.png"],
                          "prompt": ["a cat", "a dog", "a red bus"], "mos": [3.2, 1.5, 4.1]})
    val = pd.DataFrame({"name": ["DALLE2_0003.png"], "prompt": ["a cow"], "mos": [2.2]})
    test = pd.DataFrame({"name": ["SD1.5_0004.png", "LCM_SDXL_0005.png"],
                         "prompt": ["a hat", "a boat"]})  # labels withheld
    root.mkdir(parents=True, exist_ok=True)
    if train_format == "csv":
        train.to_csv(root / "info_train.csv", index=False)
    else:
        train.to_excel(root / "info_train.xlsx", index=False)
    val.to_excel(root / "info_val.xlsx", index=False)
    test.to_csv(root / "info_test.csv", index=False)
    for split, table in [("train", train), ("val", val), ("test", test)]:
        write_images(root / split, table["name"], "PNG")
    return root


@pytest.mark.parametrize("train_format", ["csv", "xlsx"])
def test_aigiqa20k_official_layout(tmp_path, train_format):
    root = write_aigiqa20k(tmp_path / "ds", train_format)
    df = load_dataset("aigiqa20k", root)
    assert df["official_split"].tolist() == ["train"] * 3 + ["val"] + ["test"] * 2
    assert df["generator"].tolist() == ["DALLE2", "SD1.5", "PixArt-alpha", "DALLE2", "SD1.5",
                                        "LCM_SDXL"]
    assert df["mos"].iloc[:4].tolist() == [3.2, 1.5, 4.1, 2.2]
    assert df["mos"].iloc[4:].isna().all()
    assert df["path"].iloc[3].endswith("val/DALLE2_0003.png")
    assert df["prompt"].iloc[2] == "a red bus"


def test_aigiqa20k_errors(tmp_path):
    root = write_aigiqa20k(tmp_path / "ds")
    (root / "test" / "SD1.5_0004.png").unlink()
    with pytest.raises(AgiqaError, match=r"1 of 6 images .* SD1.5_0004.png"):
        load_dataset("aigiqa20k", root)
    pd.DataFrame({"name": ["DALLE2_0000.png"], "prompt": ["a cat"]}).to_csv(
        root / "info_train.csv", index=False)
    with pytest.raises(AgiqaError, match=r"info_train.csv' lacks column\(s\) \['mos'\]"):
        load_dataset("aigiqa20k", root, check_files=False)
    (root / "info_train.csv").unlink()
    with pytest.raises(AgiqaError, match=r"no training score sheet .*info_train.csv.*info_train.xlsx"):
        load_dataset("aigiqa20k", root)


# ---------------------------------------------------------------- koniq10k

KONIQ_NAMES = ["10004473376.jpg", "10007357496.jpg", "10007903636.jpg"]


def write_koniq(root: Path, scores: bool = True, sets: bool = True,
                image_dir: str = "1024x768") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    counts = "0,1,20,70,9,100"
    if scores:
        lines = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"']
        lines += [f'"{n}",{counts},{3.5 + i / 10},0.6,{70 + i}' for i, n in enumerate(KONIQ_NAMES)]
        (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n")
    if sets:
        lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
        lines += [f"{n},{counts},{60 + i},12.0,{s}"
                  for i, (n, s) in enumerate(zip(KONIQ_NAMES, ["training", "validation", "test"]))]
        (root / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    if image_dir:
        write_images(root / image_dir, KONIQ_NAMES)
    return root


def test_koniq_scores_file(tmp_path):
    root = write_koniq(tmp_path / "ds", sets=False)
    df = load_dataset("koniq10k", root)
    assert df["mos"].tolist() == [3.5, 3.6, 3.7]
    assert "official_split" not in df.columns and df["c_total"].tolist() == [100] * 3
    assert load_dataset("koniq10k", root, target="MOS_zscore")["mos"].tolist() == [70, 71, 72]


def test_koniq_sets_file_gives_official_split(tmp_path):
    root = write_koniq(tmp_path / "ds", scores=False, image_dir="512x384")
    df = load_dataset("koniq10k", root)
    assert df["official_split"].tolist() == ["train", "val", "test"]
    assert df["mos"].tolist() == [60, 61, 62]
    assert "512x384" in df["path"].iloc[0]
    with pytest.raises(AgiqaError, match=r"unknown target 'mos_zscore'.*\['mos'\]"):
        load_dataset("koniq10k", root, target="mos_zscore")


def test_koniq_both_files(tmp_path):
    df = load_dataset("koniq10k", write_koniq(tmp_path / "ds"))
    assert df["mos"].tolist() == [3.5, 3.6, 3.7]
    assert df["official_split"].tolist() == ["train", "val", "test"]


def test_koniq_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgiqaError, match="no KonIQ-10k score file .*koniq10k_distributions_sets"):
        load_dataset("koniq10k", tmp_path / "empty")
    root = write_koniq(tmp_path / "noimg", image_dir="")
    with pytest.raises(AgiqaError, match="no KonIQ-10k image folder .*1024x768.*512x384"):
        load_dataset("koniq10k", root)
    assert len(load_dataset("koniq10k", root, check_files=False)) == 3
    bad = write_koniq(tmp_path / "badset", scores=False)
    text = (bad / "koniq10k_distributions_sets.csv").read_text().replace("validation", "holdout")
    (bad / "koniq10k_distributions_sets.csv").write_text(text)
    with pytest.raises(AgiqaError, match=r"unknown value\(s\) \['holdout'\]"):
        load_dataset("koniq10k", bad)


# ---------------------------------------------------------------- spaq

def write_spaq(root: Path, mos=(41.5, 77.0)) -> Path:
    table = pd.DataFrame({"Image name": ["00001.jpg", "00002.jpg"], "MOS": list(mos),
                          "Brightness": [50, 60], "Colorfulness": [40, 45], "Contrast": [55, 52],
                          "Noisiness": [60, 61], "Sharpness": [30, 80]})
    (root / "Annotations").mkdir(parents=True)
    table.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    write_images(root / "TestImage", table["Image name"])
    return root


def test_spaq_official_layout(tmp_path):
    root = write_spaq(tmp_path / "ds")
    df = load_dataset("spaq", root)
    assert df["mos"].tolist() == [41.5, 77.0] and df["path"].iloc[1].endswith("TestImage/00002.jpg")
    assert (df["generator"] == "").all() and (df["prompt"] == "").all()
    assert load_dataset("spaq", root, target="sharpness")["mos"].tolist() == [30, 80]


def test_spaq_errors(tmp_path):
    root = write_spaq(tmp_path / "ds", mos=(41.5, "n/a"))
    with pytest.raises(AgiqaError, match=r"'MOS' must be numeric.*line 3 \(00002.jpg: 'n/a'\)"):
        load_dataset("spaq", root)
    (tmp_path / "other").mkdir()
    with pytest.raises(AgiqaError, match="no score sheet .*MOS and Image attribute scores.xlsx"):
        load_dataset("spaq", tmp_path / "other")


# ---------------------------------------------------------------- folder and registry

def test_folder_finds_images_recursively(tmp_path):
    root = tmp_path / "pics"
    write_images(root, ["a.png", "b.JPG"], "PNG")
    write_images(root / "sub" / "deep", ["c.jpeg", "d.WebP", "e.bmp", "f.TIF"], "PNG")
    write_images(root / ".hidden", ["g.png"], "PNG")
    (root / "notes.txt").write_text("not an image")
    df = load_dataset("folder", root)
    assert df["name"].tolist() == ["a.png", "b.JPG", "sub/deep/c.jpeg", "sub/deep/d.WebP",
                                   "sub/deep/e.bmp", "sub/deep/f.TIF"]
    assert df["mos"].isna().all() and (df["generator"] == "").all() and (df["prompt"] == "").all()
    assert all(Path(p).is_absolute() for p in df["path"])
    with pytest.raises(AgiqaError, match="has no scores"):
        load_dataset("folder", root, target="mos")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgiqaError, match="no images found under"):
        load_dataset("folder", tmp_path / "empty")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(AgiqaError, match="unknown dataset 'agiqa1k'; valid names: agiqa3k, "
                                         "aigciqa2023, aigiqa20k, koniq10k, spaq, demo, folder"):
        load_dataset("agiqa1k", "/tmp")
    assert dataset_targets("agiqa3k") == ("mos_quality", ["mos_quality", "mos_align"])


@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n not in ("demo", "agiqa3k")])
def test_every_loader_needs_a_root(name):
    with pytest.raises(AgiqaError, match=f"dataset '{name}' needs a root folder"):
        load_dataset(name)


# ---------------------------------------------------------------- real AGIQA-3K

@pytest.mark.real_data
def test_real_agiqa3k(agiqa3k_root):
    df = load_dataset("agiqa3k", agiqa3k_root)
    assert len(df) == 2982
    assert df["generator"].nunique() == 10 and "sd1.5_lowstep" in set(df["generator"])
    assert df["prompt"].nunique() == 300
    assert df["mos"].between(0, 5).all() and df["mos"].equals(df["mos_quality"])
    assert all(Path(p).is_file() for p in df["path"])
    assert not df["name"].str.endswith("\r").any() and not df["std_align"].isna().any()
