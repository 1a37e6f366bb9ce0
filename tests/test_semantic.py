"""Semantic-vector cache (a FeatureStore entry: resume, rebuild, fp16 shards), official import."""

from __future__ import annotations

import logging
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.io import read_json, write_json
from agiqa_lib.core.tensor_io import load_tensors
from agiqa_lib.backbones.semantic_encoder import SemanticEncoder
from agiqa_lib.ma_agiqa.semantic import (QUESTIONS, OfficialVectorsSource, cache_official_vectors,
                                extract_semantic_vectors, import_official_vectors,
                                load_cached_vectors, read_manifest, semantic_cache_entry,
                                summary_record)


class CountingEncoder(SemanticEncoder):
    """A cheap deterministic encoder: per-channel image statistics mixed with the question."""

    profile, model_id, dim, is_stand_in, image_placement = "tiny", "test:counting", 6, False, \
        "after_text"

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.calls, self.images, self.fail_after = 0, 0, fail_after

    def encode(self, images, question):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.images += len(images)
        q = float(len(question))
        rows = [np.concatenate([np.asarray(im, dtype=np.float32).mean((0, 1)) / 255,
                                np.asarray(im, dtype=np.float32).std((0, 1)) / 255]) * q / 80
                for im in images]
        return torch.tensor(np.stack(rows))


@pytest.fixture
def frame(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        path = tmp_path / "images" / f"gen{i % 3}_{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)).save(path)
        rows.append({"name": path.name, "path": str(path), "mos": float(i)})
    return pd.DataFrame(rows)


def test_questions_are_verbatim():
    assert QUESTIONS == {
        "semantic_content": "Evaluate the input image to determine if its quality is compromised "
                            "due to a lack of meaningful semantic content.",
        "coherence": "Evaluate if the image quality is compromised due to violations of coherence.",
    }


def test_extraction_stores_fp16_shards_and_manifest(frame, tmp_path):
    encoder = CountingEncoder()
    vectors = extract_semantic_vectors(frame, encoder, cache_dir=tmp_path / "c", batch_size=4,
                                       shard_size=4, dataset="unit")
    assert vectors.shape == (10, 2, 6) and vectors.dtype == torch.float32
    assert encoder.images == 20  # every image, both questions
    entry = semantic_cache_entry(frame, encoder, tmp_path / "c")
    shards = sorted(entry.glob("shard_*.safetensors"))
    assert len(shards) == 3 and (entry / "manifest.json").is_file()
    stored = torch.cat([load_tensors(shard)["features"] for shard in shards])
    assert stored.dtype == torch.float16 and stored.shape == (10, 2, 6)
    assert torch.equal(stored.float(), vectors)
    # question axis follows QUESTIONS: the fake encoder scales with the question length
    ratio = vectors[:, 0].sum() / vectors[:, 1].sum()
    assert ratio == pytest.approx(len(QUESTIONS["semantic_content"]) / len(QUESTIONS["coherence"]),
                                  rel=1e-2)
    manifest = read_manifest(entry)
    identity = manifest["identity"]
    assert identity["model_id"] == "test:counting" and identity["n"] == 10
    assert identity["questions"] == QUESTIONS and identity["image_placement"] == "after_text"
    assert identity["dim"] == 6 and identity["is_stand_in"] is False
    assert identity["profile"] == "tiny" and identity["dtype"] == "float16"
    assert len(identity["files_hash"]) == 64 and manifest["shape"] == [10, 2, 6]
    assert manifest["dataset"] == "unit" and manifest["extraction"]["images_per_s"] > 0
    assert manifest["extraction"]["images_computed"] == 10
    assert manifest["question_order"] == list(QUESTIONS)
    assert manifest["note"] == "Pooled last-layer hidden states of test:counting."
    summary = summary_record(vectors, manifest)
    assert summary["n"] == 10 and summary["dim"] == 6 and summary["shape"] == [10, 2, 6]
    assert summary["dataset"] == "unit" and summary["images_per_s"] > 0


def test_the_entry_is_a_feature_store_entry(frame, tmp_path):
    """Same manifest, layout and loader as CLIP views and backbone tokens."""
    from agiqa_lib.core.manifest import read_store_manifest

    vectors = extract_semantic_vectors(frame, CountingEncoder(), cache_dir=tmp_path, shard_size=4)
    entry = semantic_cache_entry(frame, CountingEncoder(), tmp_path)
    raw = read_store_manifest(entry)
    assert raw["complete"] and raw["shard_size"] == 4 and sorted(raw["shards"]) == ["0", "1", "2"]
    assert raw["identity"]["view"] == "semantic" and raw["info"]["dataset"] is None
    assert torch.equal(load_cached_vectors(frame, CountingEncoder(), cache_dir=tmp_path), vectors)
    again = CountingEncoder()  # another shard size finds the same entry and keeps its layout
    extract_semantic_vectors(frame, again, cache_dir=tmp_path, shard_size=64)
    assert again.calls == 0 and read_store_manifest(entry)["shard_size"] == 4


def test_unfinished_entry_has_no_manifest_to_read(frame, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        extract_semantic_vectors(frame, CountingEncoder(fail_after=3), cache_dir=tmp_path,
                                 batch_size=2, shard_size=2)
    entry = semantic_cache_entry(frame, CountingEncoder(), tmp_path)
    assert (entry / "manifest.json").is_file()
    with pytest.raises(AgiqaError, match="not a finished semantic-vector cache entry"):
        read_manifest(entry)
    with pytest.raises(AgiqaError, match="no feature-cache manifest"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(AgiqaError, match="no cached semantic vectors"):
        load_cached_vectors(frame, CountingEncoder(), cache_dir=tmp_path)


def test_old_format_folders_are_named_and_not_read(frame, tmp_path, caplog):
    old = tmp_path / "tiny-test-counting-0123456789abcdef"
    old.mkdir()
    (old / "vectors.safetensors").write_bytes(b"previous format")
    encoder = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.ma_agiqa.semantic"):
        extract_semantic_vectors(frame, encoder, cache_dir=tmp_path, shard_size=4)
    assert encoder.images == 20
    assert "1 folder(s) of the previous format (tiny-test-counting-0123456789abcdef)" in caplog.text


def test_second_call_reads_the_cache(frame, tmp_path):
    first = extract_semantic_vectors(frame, CountingEncoder(), cache_dir=tmp_path, shard_size=4)
    encoder = CountingEncoder()
    again = extract_semantic_vectors(frame, encoder, cache_dir=tmp_path, shard_size=4)
    assert encoder.calls == 0 and torch.equal(first, again)
    fresh = CountingEncoder()
    extract_semantic_vectors(frame, fresh, cache_dir=tmp_path, shard_size=4, resume=False)
    assert fresh.images == 20


def test_killed_run_resumes_at_the_first_missing_shard(frame, tmp_path):
    expected = extract_semantic_vectors(frame, CountingEncoder(), cache_dir=tmp_path / "ref",
                                        batch_size=2, shard_size=4)
    killed = CountingEncoder(fail_after=5)  # 2 calls per batch: dies inside shard 1 (rows 4-7)
    with pytest.raises(KeyboardInterrupt):
        extract_semantic_vectors(frame, killed, cache_dir=tmp_path / "c", batch_size=2,
                                 shard_size=4)
    resumed = CountingEncoder()
    vectors = extract_semantic_vectors(frame, resumed, cache_dir=tmp_path / "c", batch_size=2,
                                       shard_size=4)
    assert resumed.images == 2 * 6  # shard 0 (4 images) was kept; 6 images remained
    assert torch.equal(vectors, expected)


def test_mismatching_manifest_is_rebuilt_not_reused(frame, tmp_path, caplog):
    encoder = CountingEncoder()
    extract_semantic_vectors(frame, encoder, cache_dir=tmp_path, shard_size=4)
    entry = semantic_cache_entry(frame, encoder, tmp_path)
    manifest = read_json(entry / "manifest.json")
    manifest["identity"]["questions"]["coherence"] = "Another question?"
    write_json(entry / "manifest.json", manifest)
    again = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        extract_semantic_vectors(frame, again, cache_dir=tmp_path, shard_size=4)
    assert again.images == 20
    assert "differs in ['questions']" in caplog.text


def test_corrupted_shard_is_recomputed(frame, tmp_path, caplog):
    encoder = CountingEncoder()
    reference = extract_semantic_vectors(frame, encoder, cache_dir=tmp_path, shard_size=4)
    shard = semantic_cache_entry(frame, encoder, tmp_path) / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x00" * 8  # same size, other values
    shard.write_bytes(bytes(data))
    again = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        vectors = extract_semantic_vectors(frame, again, cache_dir=tmp_path, shard_size=4)
    assert again.images == 2 * 4 and "failed their checksum (first: shard 1)" in caplog.text
    assert torch.equal(vectors, reference)


def test_other_files_or_encoder_get_another_entry(frame, tmp_path):
    encoder = CountingEncoder()
    base = semantic_cache_entry(frame, encoder, tmp_path)
    assert semantic_cache_entry(frame.iloc[:5], encoder, tmp_path) != base
    other = CountingEncoder()
    other.image_placement = "before_text"
    assert semantic_cache_entry(frame, other, tmp_path) != base


def test_unreadable_image_names_the_file(frame, tmp_path):
    bad = frame.loc[3, "path"]
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(AgiqaError, match=f"cannot read image {bad}"):
        extract_semantic_vectors(frame, CountingEncoder(), cache_dir=tmp_path / "c")


def test_tiny_mllm_end_to_end(frame, tmp_path):
    from agiqa_lib.backbones.mllm import create_mllm

    encoder = create_mllm("tiny")
    vectors = extract_semantic_vectors(frame.iloc[:3], encoder, cache_dir=tmp_path, batch_size=2)
    assert vectors.shape == (3, 2, encoder.dim)
    single = encoder.encode([Image.open(frame.loc[1, "path"])], QUESTIONS["coherence"])
    assert torch.allclose(vectors[1, 1], single[0].half().float(), atol=1e-3)


@pytest.fixture(scope="module")
def lite():
    from agiqa_lib.backbones.mllm import create_mllm

    return create_mllm("lite")


def test_lite_stand_in_is_flagged_in_the_manifest(frame, tmp_path, lite):
    extract_semantic_vectors(frame.iloc[:2], lite, cache_dir=tmp_path)
    manifest = read_manifest(semantic_cache_entry(frame.iloc[:2], lite, tmp_path))
    assert manifest["identity"]["is_stand_in"] is True
    assert "STAND-IN" in manifest["note"] and "NOT an MLLM" in manifest["note"]


# --------------------------------------------------------------------------- official import


def _write_official(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    expected = torch.randn(len(names), 2, 4096, generator=gen).half()
    for i, name in enumerate(names):
        stem = name.rsplit(".", 1)[0]
        torch.save(expected[i, 0:1].clone(), folder / f"{stem}_semantic_content.pt")
        torch.save(expected[i, 1:2].clone(), folder / f"{stem}_coherence.pt")
    return expected.float()


class NotATensor:
    """A pickled object that must never be unpickled by the importer."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_import_official_vectors(tmp_path):
    names = ["AttnGAN_normal_000.jpg", "sd1.5_lowstep_001.jpg"]
    expected = _write_official(tmp_path / "vec", names)
    vectors = import_official_vectors(tmp_path / "vec", names)
    assert vectors.shape == (2, 2, 4096)
    assert torch.equal(vectors, expected)


def test_import_rejects_a_pickled_non_tensor(tmp_path, capsys):
    names = ["a_000.jpg"]
    _write_official(tmp_path / "vec", names)
    bad = tmp_path / "vec" / "a_000_coherence.pt"
    torch.save(NotATensor(), bad)
    with pytest.raises(AgiqaError, match="a_000_coherence.pt is not a plain tensor file"):
        import_official_vectors(tmp_path / "vec", names)
    assert "unpickled!" not in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ({"vector": torch.zeros(1, 4096)}, "holds a dict, not a tensor"),
    (torch.zeros(4096), r"holds a \(4096,\)"),
    (torch.zeros(1, 4096, dtype=torch.int32), "expected"),
])
def test_import_rejects_other_content(tmp_path, value, message):
    names = ["a_000.jpg"]
    _write_official(tmp_path / "vec", names)
    torch.save(value, tmp_path / "vec" / "a_000_semantic_content.pt")
    with pytest.raises(AgiqaError, match=message):
        import_official_vectors(tmp_path / "vec", names)


def test_import_names_missing_files(tmp_path):
    _write_official(tmp_path / "vec", ["a_000.jpg", "b_001.jpg"])
    (tmp_path / "vec" / "b_001_coherence.pt").unlink()
    with pytest.raises(AgiqaError, match=r"1 official semantic-vector files missing.*b_001_coh"):
        import_official_vectors(tmp_path / "vec", ["a_000.jpg", "b_001.jpg"])
    with pytest.raises(AgiqaError, match="2 official"):  # c_002 lacks both files
        import_official_vectors(tmp_path / "vec", ["a_000.jpg", "c_002.jpg"])
    with pytest.raises(AgiqaError, match="does not exist"):
        import_official_vectors(tmp_path / "nowhere", ["a_000.jpg"])


def test_official_vectors_round_trip_through_the_cache(frame, tmp_path):
    expected = _write_official(tmp_path / "vec", list(frame["name"]))
    entry = cache_official_vectors(frame, tmp_path / "vec", cache_dir=tmp_path / "c",
                                   dataset="unit")
    manifest = read_manifest(entry)
    assert manifest["identity"]["dim"] == 4096 and manifest["dataset"] == "unit"
    assert manifest["identity"]["model_id"] == "official:mplug-owl2-llama2-7b"
    assert manifest["extraction"] == {"imported_from": str((tmp_path / "vec").resolve())}
    assert manifest["note"].startswith("Official MA-AGIQA vectors")
    vectors = load_cached_vectors(frame, OfficialVectorsSource(), cache_dir=tmp_path / "c")
    assert torch.equal(vectors, expected)
    with pytest.raises(AgiqaError, match="no cached semantic vectors"):
        load_cached_vectors(frame.iloc[:4], OfficialVectorsSource(), cache_dir=tmp_path / "c")


def test_real_agiqa3k_subset_with_lite(agiqa3k_root, tmp_path, lite):
    data = pd.read_csv(agiqa3k_root / "data.csv").head(3)
    images = agiqa3k_root / "images"
    frame = pd.DataFrame({"name": data["name"], "path": [str(images / n) for n in data["name"]]})
    vectors = extract_semantic_vectors(frame, lite, cache_dir=tmp_path)
    assert vectors.shape == (3, 2, 384) and torch.isfinite(vectors).all()
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-3)


def test_cli_extract_and_import(frame, tmp_path, capsys):
    from agiqa_lib.cli import main

    images = str(tmp_path / "images")
    cache = str(tmp_path / "cache")
    assert main(["semantic", "extract", "folder", "--root", images, "--profile", "tiny",
                 "--limit", "4", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "semantic vectors (4, 2, 64)" in out and "images/s" in out
    assert main(["semantic", "extract", "folder", "--root", images, "--profile", "tiny",
                 "--limit", "4", "--cache-dir", cache]) == 0
    assert "already cached" in capsys.readouterr().out
    _write_official(tmp_path / "vec", list(frame["name"]))
    assert main(["semantic", "import", str(tmp_path / "vec"), "folder", "--root", images,
                 "--cache-dir", cache]) == 0
    assert "imported official vectors of 10 images" in capsys.readouterr().out
    assert main(["semantic", "import", str(tmp_path / "nowhere"), "folder", "--root", images]) == 2
    assert "does not exist" in capsys.readouterr().err
