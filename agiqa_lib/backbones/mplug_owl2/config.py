"""`MPLUGOwl2Config`: the hub's ``config.json`` of mPLUG-Owl2 (``model_type: mplug_owl2``).

The released config (mPLUG-Owl2 ``model/configuration_mplug_owl2.py``) is a LLaMA config plus
one dict, ``visual_config``, holding two sub-dicts: ``visual_model`` (the ViT-L/14 at 448 px,
lines 216-252) and ``visual_abstractor`` (64 learned queries, 6 layers, lines 274-302).
Here the LLaMA part is transformers' own `LlamaConfig` (so the hub file's ``rope_theta``,
``rope_scaling``, ``rms_norm_eps`` ... are read the current way), and the two sub-dicts are
read into small frozen dataclasses whose defaults are the released defaults; keys the
release never reads (``PretrainedConfig`` fields saved into the sub-dicts) are ignored.

``MPLUGOwl2Config()`` with no arguments is the released 7B architecture
(``MAGAer13/mplug-owl2-llama2-7b``, and ``q-future/one-align`` which shares it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlamaConfig

MODEL_TYPE = "mplug_owl2"


@dataclass(frozen=True)
class VisionSettings:
    """The ViT of ``visual_config["visual_model"]`` (configuration_mplug_owl2.py:216-252)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 448
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-6
    use_cls_token: bool = True
    use_post_layernorm: bool = True

    @property
    def num_positions(self) -> int:
        """Patch tokens + the class token: (448 / 14)^2 + 1 = 1025."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class AbstractorSettings:
    """The visual abstractor of ``visual_config["visual_abstractor"]`` (lines 274-302)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 2816
    layer_norm_eps: float = 1e-6
    encoder_hidden_size: int = 1024
    num_learnable_queries: int = 64
    grid_size: int = 32
    use_cls_token: bool = True
    add_v2t_pos_emb: bool = False


def _settings(cls, values: dict[str, Any] | None):
    """Build `cls` from a config sub-dict, keeping only the fields the release reads."""
    names = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in (values or {}).items() if k in names}
    if kept.get("grid_size") in (None, 0):  # the release: `grid_size if grid_size else 32`
        kept.pop("grid_size", None)
    return cls(**kept)


@strict
class MPLUGOwl2Config(LlamaConfig):
    """LLaMA-2 config + ``visual_config`` = {"visual_model": {...}, "visual_abstractor": {...}}."""

    model_type = MODEL_TYPE
    visual_config: dict | None = None

    def __post_init__(self, **kwargs):
        if self.visual_config is None:
            self.visual_config = {"visual_model": dataclasses.asdict(VisionSettings()),
                                  "visual_abstractor": dataclasses.asdict(AbstractorSettings())}
        super().__post_init__(**kwargs)

    @property
    def vision(self) -> VisionSettings:
        """The vision encoder settings (released defaults where the file is silent)."""
        return _settings(VisionSettings, self.visual_config.get("visual_model"))

    @property
    def abstractor(self) -> AbstractorSettings:
        """The visual abstractor settings (released defaults where the file is silent)."""
        return _settings(AbstractorSettings, self.visual_config.get("visual_abstractor"))

    @property
    def n_visual_tokens(self) -> int:
        """Visual tokens spliced in per image: the learned queries + the end token (64 + 1)."""
        return self.abstractor.num_learnable_queries + 1

    def check_supported(self) -> None:
        """Refuse the released options this implementation does not build (none of the hub's)."""
        vision, abstractor = self.vision, self.abstractor
        if not vision.use_cls_token or not abstractor.use_cls_token:
            raise ValueError("mPLUG-Owl2 configs without the class token (use_cls_token=False) "
                             "are not supported; the released checkpoints use it")
        if abstractor.add_v2t_pos_emb:
            raise ValueError("add_v2t_pos_emb=True is not supported (the released code cannot "
                             "build it either: it reads a missing config.cls_token)")
        if abstractor.grid_size ** 2 + 1 != vision.num_positions:
            raise ValueError(f"abstractor grid_size {abstractor.grid_size} does not match the "
                             f"vision tokens: {vision.num_positions} = grid^2 + 1 expected")


# As the release does (mPLUG-Owl2 modeling_mplug_owl2.py:447): AutoConfig (used e.g. by
# AutoTokenizer) then reads ``model_type: mplug_owl2`` folders without an unknown-type warning.
AutoConfig.register(MODEL_TYPE, MPLUGOwl2Config, exist_ok=True)
