"""Step-3 text-model configuration: parsed from a Hugging Face `config.json`, validated.

Accepts the released VLM form (`Step3VLConfig` with the LLM under `text_config`) and a bare
text config. Every error names the offending field. Nothing here assumes the released sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Floating dtypes a Step-3 checkpoint may declare in `torch_dtype`.
CHECKPOINT_DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A config.json that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Step3Config:
    hidden_size: int
    num_hidden_layers: int
    vocab_size: int
    num_attention_heads: int  # query heads
    num_attention_groups: int  # KV heads; MFA shares exactly one
    head_dim: int
    share_q_dim: int  # low-rank query width before `wq`
    intermediate_size: int  # dense-layer SwiGLU width
    moe_num_experts: int
    moe_top_k: int
    moe_intermediate_size: int  # per routed expert
    share_expert_dim: int  # the always-on shared expert's width
    moe_layers: tuple[int, ...]  # parsed from `moe_layers_enum`
    norm_expert_weight: bool = False  # renormalise the top-k routing weights (False in Step-3)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_position_embedding: int = 65536
    torch_dtype: str = "bfloat16"
    image_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # Anything else found in the text config (kept so a round trip loses nothing).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived -------------------------------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        return layer in self._moe_set

    @functools.cached_property
    def _moe_set(self) -> frozenset[int]:
        return frozenset(self.moe_layers)

    @property
    def dense_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_hidden_layers) if i not in self._moe_set)

    @property
    def q_width(self) -> int:
        """Width of the expanded queries (heads x head_dim), the input of `o_proj`."""
        return self.num_attention_heads * self.head_dim

    # ---- parsing -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Step3Config":
        if not isinstance(raw, dict):
            raise ConfigError(f"config must be a JSON object, got {type(raw).__name__}")
        text = raw.get("text_config", raw)
        if not isinstance(text, dict):
            raise ConfigError("`text_config` must be a JSON object")
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)} - {"moe_layers", "extra"}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                    and f.name != "moe_layers"]
        missing = [n for n in required if n not in text] + (
            ["moe_layers_enum"] if "moe_layers_enum" not in text else [])
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        for name in known:
            if name in text:
                kwargs[name] = text[name]
        # Token ids may sit at the top level of the VLM config only.
        for name in ("bos_token_id", "eos_token_id", "image_token_id"):
            if kwargs.get(name) is None and raw.get(name) is not None:
                kwargs[name] = raw[name]
        kwargs["moe_layers"] = _parse_moe_layers(text["moe_layers_enum"])
        kwargs["extra"] = {k: v for k, v in text.items() if k not in known | {"moe_layers_enum"}}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "Step3Config":
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

    def replace(self, **changes: Any) -> "Step3Config":
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_text_dict(self) -> dict[str, Any]:
        """The text config as Step-3 writes it (`moe_layers_enum` as a comma-separated string)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("moe_layers", "extra"):
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        out["moe_layers_enum"] = ",".join(str(i) for i in self.moe_layers)
        out.setdefault("model_type", "step3_text")
        return out

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        positive_ints = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads",
                         "num_attention_groups", "head_dim", "share_q_dim", "intermediate_size",
                         "moe_num_experts", "moe_top_k", "moe_intermediate_size",
                         "share_expert_dim", "max_position_embedding")
        for name in positive_ints:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("image_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, minimum=0)
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"`{name}` must be a positive number, got {value!r}")
        if not isinstance(self.norm_expert_weight, bool):
            raise ConfigError(f"`norm_expert_weight` must be true or false, "
                              f"got {self.norm_expert_weight!r}")
        if self.num_attention_groups != 1:
            raise ConfigError(
                f"`num_attention_groups` must be 1 (MFA shares one K/V head), "
                f"got {self.num_attention_groups}")
        if self.head_dim % 2:
            raise ConfigError(f"`head_dim` must be even for rotate-half RoPE, got {self.head_dim}")
        if self.moe_top_k > self.moe_num_experts:
            raise ConfigError(f"`moe_top_k` ({self.moe_top_k}) must be <= `moe_num_experts` "
                              f"({self.moe_num_experts})")
        bad = [i for i in self.moe_layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ConfigError(f"`moe_layers_enum` has layer indices {bad} outside "
                              f"[0, {self.num_hidden_layers}) (num_hidden_layers)")
        if len(set(self.moe_layers)) != len(self.moe_layers):
            raise ConfigError(f"`moe_layers_enum` lists a layer twice: {list(self.moe_layers)}")
        if self.torch_dtype not in CHECKPOINT_DTYPES:
            raise ConfigError(f"`torch_dtype` must be one of {CHECKPOINT_DTYPES}, "
                              f"got {self.torch_dtype!r}")
        for name in ("image_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and value >= self.vocab_size:
                raise ConfigError(f"`{name}` ({value}) must be < `vocab_size` ({self.vocab_size})")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}")


def _parse_moe_layers(value: Any) -> tuple[int, ...]:
    """`moe_layers_enum` is a comma-separated string in released configs; a list is accepted."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigError(f"`moe_layers_enum` must be a comma-separated string, got {value!r}")
    out = []
    for p in parts:
        try:
            if isinstance(p, bool) or isinstance(p, float):
                raise ValueError
            out.append(int(p))
        except (TypeError, ValueError):
            raise ConfigError(f"`moe_layers_enum` entry {p!r} is not an integer") from None
    return tuple(sorted(out))
