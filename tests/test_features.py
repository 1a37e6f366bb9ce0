"""Feature cache: round trip, resume after a kill, rebuild on mismatch or corruption, fp16, keys."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agiqa_lib.core.cache import CacheKey, FeatureStore
from agiqa_lib.core.content_key import file_list_hash
from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.core.features import (describe_transform, extract_features, fill_store, item_seed,
                                open_store)
from agiqa_lib.core.manifest import read_store_manifest


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Deterministic transform: the 8x8 image as a [3, 8, 8] float tensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def noisy(image: Image.Image) -> torch.Tensor:
    """Random transform (torch and python RNG), like a train-time augmentation."""
    import random
    return to_tensor(image) + torch.rand(1) + random.random()


class CountingEncoder:
    """Channel means [B, 3]; counts images seen; raises after `fail_after` batches (a 'kill')."""

    def __init__(self, fail_after: int | None = None):
        self.images, self.batches, self.fail_after = 0, 0, fail_after

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches += 1
        self.images += len(x)
        return x.mean(dim=(2, 3))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A cache per test: identical tiny images elsewhere would otherwise share entries."""
    monkeypatch.setenv("AGIQA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def images(tmp_path):
    """Ten tiny RGB images with distinct colours."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        path = tmp_path / "imgs" / f"img_{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def key(**changes) -> CacheKey:
    fields = dict(dataset="unit", model_id="mean-rgb", profile="tiny", transform="to_tensor")
    return CacheKey(**{**fields, **changes})


def expected_means(paths) -> torch.Tensor:
    return torch.stack([to_tensor(Image.open(p).convert("RGB")).mean(dim=(1, 2)) for p in paths])


def test_round_trip_and_reuse(images):
    enc = CountingEncoder()
    feats = extract_features(images, enc, to_tensor, key(), batch_size=3, shard_size=4,
                             progress=False)
    assert feats.shape == (10, 3) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected_means(images))
    again = CountingEncoder()
    torch.testing.assert_close(extract_features(images, again, to_tensor, key(), batch_size=3,
                                                shard_size=4, progress=False), feats)
    assert again.images == 0  # served from the cache
    store = open_store(images, key(), shard_size=4)
    assert store.complete and store.num_shards == 3 and store.item_shape == (3,)
    manifest = (store.path / "manifest.json").read_text()
    assert '"files_hash"' in manifest and '"mean-rgb"' in manifest


def test_resume_after_kill_computes_only_missing_shards(images):
    killed = CountingEncoder(fail_after=3)  # batch 2 completes shard 0 (rows 0-3), batch 3 dies
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, killed, to_tensor, key(), batch_size=2, shard_size=4,
                         progress=False)
    store = open_store(images, key(), shard_size=4)
    assert store.missing_shards() == [1, 2] and not store.complete
    resumed = CountingEncoder()
    stats = fill_store(store, images, resumed, to_tensor, batch_size=2, progress=False)
    assert resumed.images == 6 and stats.n_computed == 6 and stats.n_total == 10
    torch.testing.assert_close(store.load(), expected_means(images))
    assert not list(store.path.glob(".*.tmp"))


def test_manifest_of_other_features_is_rebuilt(images, caplog):
    store = open_store(images, key(), shard_size=4)
    fill_store(store, images, CountingEncoder(), to_tensor, progress=False)
    manifest = (store.path / "manifest.json").read_text()
    (store.path / "manifest.json").write_text(manifest.replace('"mean-rgb"', '"other-model"'))
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        feats = extract_features(images, enc, to_tensor, key(), shard_size=4, progress=False)
    assert enc.images == 10
    assert "describes other features" in caplog.text and "model_id" in caplog.text
    torch.testing.assert_close(feats, expected_means(images))
    (store.path / "manifest.json").write_text('{"identity": ')  # e.g. hand-edited, truncated
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        extract_features(images, enc, to_tensor, key(), shard_size=4, progress=False)
    assert enc.images == 10 and "manifest unreadable" in caplog.text


def test_truncated_and_corrupted_shards_are_recomputed(images, caplog):
    store = open_store(images, key(), shard_size=4)
    fill_store(store, images, CountingEncoder(), to_tensor, progress=False)
    shard0, shard1 = sorted(store.path.glob("shard_*.safetensors"))[:2]
    shard0.write_bytes(shard0.read_bytes()[:-5])  # partial file: caught by the size check
    data = bytearray(shard1.read_bytes())
    data[-1] ^= 0xFF  # same size, flipped value bits: caught by the checksum
    shard1.write_bytes(bytes(data))
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING):
        feats = extract_features(images, enc, to_tensor, key(), shard_size=4, progress=False)
    assert enc.images == 8  # shards 0 and 1, four images each
    assert "shard 0 is recomputed" in caplog.text and "failed their checksum" in caplog.text
    torch.testing.assert_close(feats, expected_means(images))


def test_several_corrupt_shards_are_all_recomputed_in_one_pass(images, caplog):
    store = open_store(images, key(), shard_size=4)
    fill_store(store, images, CountingEncoder(), to_tensor, progress=False)
    for shard in sorted(store.path.glob("shard_*.safetensors"))[1:]:
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0x01
        shard.write_bytes(bytes(data))
    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="agiqa_lib.core.cache"):
        feats = extract_features(images, enc, to_tensor, key(), shard_size=4, progress=False)
    assert enc.images == 6 and "2 shard(s)" in caplog.text
    torch.testing.assert_close(feats, expected_means(images))


def test_info_block_is_kept_outside_the_identity(images):
    store = open_store(images, key(), shard_size=4)
    fill_store(store, images, CountingEncoder(), to_tensor, progress=False)
    extraction = read_store_manifest(store.path)["info"]["extraction"]
    assert extraction["images_computed"] == 10 and extraction["images_per_s"] > 0
    with store.writing():
        store.update_info({"note": "computed for a unit test"})
    again = open_store(images, key(), shard_size=4)
    assert again.path == store.path and again.complete
    assert again.info == {"extraction": extraction, "note": "computed for a unit test"}
    fill_store(again, images, CountingEncoder(), to_tensor, progress=False)  # nothing to do
    assert read_store_manifest(store.path)["info"]["extraction"] == extraction


def test_params_write_all_and_kept_layout(images, tmp_path):
    files = file_list_hash(images)
    store = FeatureStore(key(params={"questions": ("a", "b"), "dim": 3}), 10, files,
                         shard_size=4, root=tmp_path / "r")
    assert store.identity["questions"] == ["a", "b"] and store.identity["dim"] == 3
    assert FeatureStore(key(params={"questions": ("a", "c"), "dim": 3}), 10, files,
                        root=tmp_path / "r").path != store.path
    data = torch.randn(10, 2, 3)
    with store.writing():
        store.write_all(data)
    reopened = FeatureStore(key(params={"questions": ["a", "b"], "dim": 3}), 10, files,
                            shard_size=64, root=tmp_path / "r")
    assert reopened.complete and reopened.shard_size == 4 and reopened.num_shards == 3
    torch.testing.assert_close(reopened.load(), data)
    with reopened.writing():  # new item shape: rebuilt, on the layout the caller planned with
        reopened.write_shard(1, torch.zeros(4, 5))
    assert reopened.shard_size == 4 and reopened.missing_shards() == [0, 2]
    assert read_store_manifest(store.path)["identity"]["dim"] == 3
    with pytest.raises(ValueError, match="may not redefine"):
        FeatureStore(key(params={"n": 3}), 10, files, root=tmp_path / "r")
    with pytest.raises(AgiqaError, match="no feature-cache manifest"):
        read_store_manifest(tmp_path / "nowhere")
    (store.path / "manifest.json").write_text('{"identity": {}}')
    with pytest.raises(AgiqaError, match="is malformed .field 'info'"):
        read_store_manifest(store.path)


def test_wrong_shape_shard_is_not_reused(images):
    store = open_store(images, key(), shard_size=4)
    fill_store(store, images, CountingEncoder(), to_tensor, progress=False)
    wider = lambda x: torch.cat([x.mean(dim=(2, 3))] * 2, dim=1)  # noqa: E731 - encoder changed
    store = open_store(images, key(), shard_size=4)
    with store.writing():
        store.write_shard(0, wider(torch.stack([to_tensor(Image.open(p)) for p in images[:4]])))
    assert store.missing_shards() == [1, 2] and store.item_shape == (6,)
    feats = extract_features(images, wider, to_tensor, key(), shard_size=4, progress=False)
    assert feats.shape == (10, 6)


def test_fp16_storage(images):
    feats = extract_features(images, CountingEncoder(), to_tensor, key(), fp16=True,
                             progress=False)
    assert feats.dtype == torch.float16
    torch.testing.assert_close(feats.float(), expected_means(images), atol=1e-3, rtol=1e-3)
    assert open_store(images, key(), fp16=True).path != open_store(images, key()).path


def test_augmented_views_are_reproducible_and_resume_identically(images, tmp_path):
    aug = key(transform=describe_transform(noisy), view="aug0", seed=7)
    full = extract_features(images, CountingEncoder(), noisy, aug, batch_size=2, shard_size=4,
                            progress=False)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    other_root = FeatureStore(aug, len(images), file_list_hash(images), shard_size=4,
                              root=tmp_path / "other-cache")
    with pytest.raises(KeyboardInterrupt):
        fill_store(other_root, images, CountingEncoder(fail_after=2), noisy, batch_size=2,
                   progress=False)
    fill_store(other_root, images, CountingEncoder(), noisy, batch_size=3, num_workers=2,
               progress=False)
    torch.testing.assert_close(other_root.load(), full)  # resumed, other batches and workers
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    view1 = extract_features(images, CountingEncoder(), noisy, key(
        transform=describe_transform(noisy), view="aug1", seed=7), progress=False)
    assert not torch.allclose(view1, full)
    assert item_seed(7, "aug0", 3) != item_seed(7, "aug1", 3) != item_seed(8, "aug0", 3)


def test_key_changes_with_files_transform_and_model(images, tmp_path):
    base = open_store(images, key()).path
    assert open_store(images, key()).path == base
    assert open_store(images[:-1], key()).path != base
    assert open_store(images, key(transform="other")).path != base
    assert open_store(images, key(model_id="other")).path != base
    assert open_store(images, key(profile="lite")).path != base
    Image.new("RGB", (16, 16)).save(images[3])  # same name, replaced content (other size)
    assert open_store(images, key()).path != base
    assert describe_transform(to_tensor) == describe_transform(to_tensor)
    assert " at 0x" not in describe_transform(to_tensor)


def test_unreadable_and_missing_images_name_the_file(images):
    with open(images[4], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(AgiqaError, match="img_04.png"):
        extract_features(images, CountingEncoder(), to_tensor, key(), progress=False)
    with pytest.raises(AgiqaError, match="missing.png"):
        extract_features(images + [images[0].replace("img_00", "missing")], CountingEncoder(),
                         to_tensor, key(), progress=False)


def test_tiny_clip_views_and_backbone_tokens(images):
    from agiqa_lib.core.features import backbone_tokens, clip_image_features
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

    df = pd.DataFrame({"path": images})
    bundle = create_clip("tiny")
    feats = clip_image_features(df, bundle, "unit", n_aug=2, seed=3, batch_size=4,
                                progress=False)
    assert list(feats) == ["test", "aug0", "aug1"]
    assert all(f.shape == (10, bundle.embed_dim) for f in feats.values())
    with torch.inference_mode():
        direct = bundle.model.encode_image(torch.stack(
            [bundle.preprocess_val(Image.open(p).convert("RGB")) for p in images[:2]]))
    torch.testing.assert_close(feats["test"][:2], direct)
    assert not torch.allclose(feats["aug0"], feats["aug1"])
    again = clip_image_features(df, bundle, "unit", views=["aug1"], seed=3, progress=False)
    torch.testing.assert_close(again["aug1"], feats["aug1"])
    with pytest.raises(AgiqaError, match="unknown view"):
        clip_image_features(df, bundle, "unit", views=["train"], progress=False)

    backbone = create_iqa_backbone("tiny")
    tokens = backbone_tokens(df, backbone, "unit", "tiny", batch_size=4, progress=False)
    assert tokens.shape == (10, backbone.out_channels, 784) and tokens.dtype == torch.float16


def test_augmented_views_of_some_rows_equal_their_rows_of_the_whole_view(images):
    """`aug_rows` extracts those rows only (CLIP-AGIQA's train rows), each with the features
    it has in the whole-dataset view; another subset is another cache entry."""
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.clip_agiqa.train import ClipFeatures
    from agiqa_lib.core.features import clip_image_features, clip_view

    df = pd.DataFrame({"path": images})
    bundle = create_clip("tiny")
    whole = clip_image_features(df, bundle, "unit", n_aug=2, seed=3, batch_size=4,
                                progress=False)
    rows = [1, 4, 5, 8]
    some = clip_image_features(df, bundle, "unit", n_aug=2, seed=3, batch_size=4,
                               progress=False, aug_rows=rows)
    torch.testing.assert_close(some["test"], whole["test"])
    for view in ("aug0", "aug1"):
        assert some[view].shape == (len(rows), bundle.embed_dim)
        torch.testing.assert_close(some[view], whole[view][rows], rtol=1e-5, atol=1e-6)
    paths = list(map(str, images))
    entry = clip_view(bundle, "unit", "aug0", 3, rows=rows)
    other = clip_view(bundle, "unit", "aug0", 3, rows=[1, 4, 5, 9])
    assert open_store(entry.files(paths), entry.key).path != \
        open_store(other.files(paths), other.key).path
    assert open_store(entry.files(paths), entry.key).complete

    features = ClipFeatures.from_views(some, rows)
    torch.testing.assert_close(features.training_views(np.array([8, 1])),
                               torch.stack([whole["aug0"], whole["aug1"]])[:, [8, 1]],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(AgiqaError, match=r"rows \[2\] have no cached augmented views"):
        features.training_views(np.array([1, 2]))
    with pytest.raises(AgiqaError, match="sorted"):
        ClipFeatures.from_views(some, [4, 1, 5, 8])


def test_auto_batch_size_is_small_on_a_cpu_and_unchanged_elsewhere():
    from agiqa_lib.core.features import auto_batch_size

    assert [auto_batch_size(None, "cpu", 32, side=s) for s in (224, 256, 320, 512, 1024)] == \
        [4, 4, 2, 1, 1]
    assert auto_batch_size(None, torch.device("cpu"), 32) == 4
    assert auto_batch_size(None, "cuda", 32) == 32 and auto_batch_size(None, "cuda:1", 16) == 16
    assert auto_batch_size(8, "cpu", 32) == 8  # an explicit batch wins


def test_features_do_not_depend_on_the_batch_size(images):
    """The CPU default batch gives the features the old batch of 32 gave (tiny CLIP)."""
    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.core.features import clip_image_features

    df = pd.DataFrame({"path": images})
    bundle = create_clip("tiny")
    small = clip_image_features(df, bundle, "small", n_aug=1, seed=3, progress=False)
    large = clip_image_features(df, bundle, "large", n_aug=1, seed=3, batch_size=32,
                                progress=False)
    for view in ("test", "aug0"):
        torch.testing.assert_close(small[view], large[view], rtol=1e-5, atol=1e-6)


@pytest.mark.real_data
def test_lite_clip_on_real_agiqa3k_subset_resumes_after_kill(agiqa3k_root):
    from agiqa_lib.core.features import clip_view, fill_store, open_store
    from agiqa_lib.backbones.clip import create_clip

    paths = sorted(str(p) for p in (agiqa3k_root / "images").glob("*.jpg"))[:32]
    bundle = create_clip("lite")
    spec = clip_view(bundle, "agiqa3k-subset32")
    calls = {"images": 0}

    def dies_after_two_batches(x):
        if calls["images"] >= 16:
            raise KeyboardInterrupt("simulated kill")
        calls["images"] += len(x)
        return spec.encode(x)

    store = open_store(paths, spec.key, shard_size=8)
    with pytest.raises(KeyboardInterrupt):
        fill_store(store, paths, dies_after_two_batches, spec.transform, batch_size=8,
                   progress=False)
    store = open_store(paths, spec.key, shard_size=8)
    assert store.missing_shards() == [2, 3]
    stats = fill_store(store, paths, spec.encode, spec.transform, batch_size=8, progress=False)
    assert stats.n_computed == 16
    feats = store.load()
    assert feats.shape == (32, bundle.embed_dim) and torch.isfinite(feats).all()
    with torch.inference_mode():
        direct = spec.encode(torch.stack(
            [spec.transform(Image.open(paths[i])) for i in (0, 20, 31)]))
    torch.testing.assert_close(feats[[0, 20, 31]], direct, atol=1e-4, rtol=1e-4)
    assert feats.std(dim=0).mean() > 0  # real images give different features
