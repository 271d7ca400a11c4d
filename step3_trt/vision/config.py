"""The vision tower's configuration: `vision_config` of a Step-3 `config.json`, plus the projector
fields that the released `Step3VLConfig` keeps at the top level. Typed and validated; every error
names the offending field.

Released field names (vLLM / SGLang `Step3VisionEncoderConfig`, `Step3VLConfig`): see
`docs/step3-facts.md`, section "Vision".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from step3_trt.config import ConfigError

# Architecture sizes a checkpoint must state; the rest default as in the released config classes.
_REQUIRED_VISION = ("hidden_size", "intermediate_size", "output_hidden_size", "num_hidden_layers",
                    "num_attention_heads", "image_size", "patch_size")
SUPPORTED_ACTIVATIONS = ("quick_gelu",)


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int  # ViT width
    intermediate_size: int  # ViT MLP width
    output_hidden_size: int  # `vit_downsampler` output channels (`vit_downsampler2` makes 2x)
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int  # side the position embeddings were trained for (728)
    patch_size: int
    text_hidden_size: int  # `vit_large_projector` output: the text model's hidden size
    projector_stride: int  # top-level `understand_projector_stride`: `vit_downsampler`'s stride
    projector_bias: bool = True  # top-level `projector_bias`: `vit_large_projector` has a bias
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    # Other `vision_config` fields, kept for a lossless round trip. Notably `layer_norm_eps`:
    # the publisher's modeling code (and SGLang) hard-code 1e-6 in the encoder layers and never
    # read it, so neither do we (docs/step3-facts.md, "Vision").
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_grid(self) -> int:
        """Side of the position-embedding grid (52 for 728 / 14)."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Rows of `position_embedding`: the grid plus the class token."""
        return self.position_grid ** 2 + 1

    @property
    def projector_width(self) -> int:
        """`vit_downsampler2` output channels, the input of `vit_large_projector`."""
        return 2 * self.output_hidden_size

    def patch_grid(self, side: int) -> int:
        """ViT tokens per side for a square view of `side` pixels (a multiple of the patch)."""
        if side <= 0 or side % self.patch_size:
            raise ValueError(f"view side {side} is not a positive multiple of the patch size "
                             f"{self.patch_size}")
        return side // self.patch_size

    def embedding_grid(self, side: int) -> int:
        """Embeddings per side after both downsampling convs (13 for 728, 9 for 504)."""
        grid = (self.patch_grid(side) - 2) // self.projector_stride + 1  # kernel 2, no padding
        if grid < 1:
            raise ValueError(f"a {side}-pixel view is too small for `vit_downsampler` "
                             f"(kernel 2 over a {self.patch_grid(side)}-token grid)")
        return (grid - 1) // 2 + 1  # kernel 3, stride 2, padding 1

    def embeddings_per_view(self, side: int) -> int:
        return self.embedding_grid(side) ** 2

    # ---- parsing -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "VisionConfig":
        """From a whole VLM config.json object (vision_config, text_config and the top level)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"config must be a JSON object, got {type(raw).__name__}")
        vision = raw.get("vision_config")
        if vision is None:
            raise ConfigError("config has no `vision_config` (a text-only checkpoint)")
        if not isinstance(vision, dict):
            raise ConfigError("`vision_config` must be a JSON object")
        missing = [f"vision_config.{n}" for n in _REQUIRED_VISION if n not in vision]
        if "understand_projector_stride" not in raw:
            missing.append("understand_projector_stride")
        text = raw.get("text_config", raw)
        if not isinstance(text, dict) or "hidden_size" not in text:
            missing.append("text_config.hidden_size")
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        own = {f.name for f in dataclasses.fields(cls)} - {"text_hidden_size", "projector_stride",
                                                             "projector_bias", "extra"}
        kwargs: dict[str, Any] = {n: vision[n] for n in own if n in vision}
        kwargs["text_hidden_size"] = text["hidden_size"]
        kwargs["projector_stride"] = raw["understand_projector_stride"]
        if "projector_bias" in raw:
            kwargs["projector_bias"] = raw["projector_bias"]
        kwargs["extra"] = {k: v for k, v in vision.items() if k not in own}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "VisionConfig":
        """Read `config.json` from a file path or from a checkpoint directory."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_vlm_fields(self) -> dict[str, Any]:
        """The released spelling: `vision_config` plus the top-level projector fields."""
        vision = dict(self.extra)
        vision.setdefault("model_type", "step3_vision_encoder")
        for f in dataclasses.fields(self):
            if f.name not in ("text_hidden_size", "projector_stride", "projector_bias", "extra"):
                vision[f.name] = getattr(self, f.name)
        return {"vision_config": vision, "understand_projector_stride": self.projector_stride,
                "projector_bias": self.projector_bias}

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        for name in ("hidden_size", "intermediate_size", "output_hidden_size", "num_hidden_layers",
                     "num_attention_heads", "image_size", "patch_size", "text_hidden_size",
                     "projector_stride", "num_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{_spelling(name)}` must be a positive integer, got {value!r}")
        if not isinstance(self.projector_bias, bool):
            raise ConfigError(f"`projector_bias` must be true or false, got {self.projector_bias!r}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"`vision_config.hidden_act` must be one of {SUPPORTED_ACTIVATIONS}, "
                              f"got {self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"`vision_config.hidden_size` ({self.hidden_size}) must be a multiple "
                              f"of `vision_config.num_attention_heads` ({self.num_attention_heads})")
        if self.image_size % self.patch_size:
            raise ConfigError(f"`vision_config.image_size` ({self.image_size}) must be a multiple "
                              f"of `vision_config.patch_size` ({self.patch_size})")
        if self.num_channels != 3:
            raise ConfigError(f"`vision_config.num_channels` must be 3 (RGB images), "
                              f"got {self.num_channels}")


def _spelling(name: str) -> str:
    """The field's name as config.json spells it."""
    top = {"text_hidden_size": "text_config.hidden_size",
           "projector_stride": "understand_projector_stride"}
    return top.get(name, f"vision_config.{name}")
