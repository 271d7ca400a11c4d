"""Step-3 text-model configuration: parsed from a Hugging Face `config.json`, validated.

Accepts the released VLM form (`Step3VLConfig` with the LLM under `text_config`) and a bare
text config. Every error names the offending field. Nothing here assumes the released sizes.

Read as the reference loaders (vLLM, SGLang, the Hugging Face remote code) read them:
`eos_token_id` may be one id or a list; a missing `moe_layers_enum` means every layer but
layer 0 is MoE (their fallback); `max_position_embedding` (the released spelling) or the plural
`max_position_embeddings` (what SGLang reads); RoPE is the default (unscaled) kind, so a
`rope_scaling` / `rope_parameters` asking for any other kind is refused rather than ignored.
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
    eos_token_ids: tuple[int, ...] = ()  # `eos_token_id` of config.json: one id or a list
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
    def eos_token_id(self) -> int | None:
        """The config's one EOS id (None without one). A config that lists several raises:
        stopping must then use `eos_token_ids` (or `GenerationConfig.eos_token_ids`)."""
        if len(self.eos_token_ids) > 1:
            raise ConfigError(f"`eos_token_id` lists {len(self.eos_token_ids)} ids "
                              f"{list(self.eos_token_ids)}; read `eos_token_ids`")
        return self.eos_token_ids[0] if self.eos_token_ids else None

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
        parsed = {"moe_layers", "eos_token_ids", "max_position_embedding", "rope_theta", "extra"}
        known = {f.name for f in dataclasses.fields(cls)} - parsed
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                    and f.name not in parsed]
        missing = [n for n in required if n not in text]
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        kwargs: dict[str, Any] = {name: text[name] for name in known if name in text}
        # Token ids may sit at the top level of the VLM config only.
        for name in ("bos_token_id", "image_token_id"):
            if kwargs.get(name) is None and raw.get(name) is not None:
                kwargs[name] = raw[name]
        eos = text.get("eos_token_id")
        kwargs["eos_token_ids"] = parse_token_ids("eos_token_id",
                                                  raw.get("eos_token_id") if eos is None else eos)
        kwargs["moe_layers"] = _parse_moe_layers(text.get("moe_layers_enum"),
                                                 text.get("num_hidden_layers"))
        kwargs.update(_max_positions(text))
        kwargs.update(_rope_theta(text))
        consumed = known | {"moe_layers_enum", "eos_token_id", "max_position_embedding",
                            "max_position_embeddings", "rope_theta"}
        kwargs["extra"] = {k: v for k, v in text.items() if k not in consumed}
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
            if f.name in ("moe_layers", "eos_token_ids", "extra"):
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        if self.eos_token_ids:
            out["eos_token_id"] = self.eos_token_ids[0] if len(self.eos_token_ids) == 1 \
                else list(self.eos_token_ids)
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
        for name in ("image_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, minimum=0)
        for value in self.eos_token_ids:
            _check_int("eos_token_id", value, minimum=0)
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
        ids = [("image_token_id", self.image_token_id), ("bos_token_id", self.bos_token_id),
               *(("eos_token_id", i) for i in self.eos_token_ids)]
        for name, value in ids:
            if value is not None and value >= self.vocab_size:
                raise ConfigError(f"`{name}` ({value}) must be < `vocab_size` ({self.vocab_size})")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}")


def parse_token_ids(name: str, value: Any) -> tuple[int, ...]:
    """A token-id field that may be absent (null), one id, or a list of ids (HF's convention
    for `eos_token_id` in config.json and generation_config.json)."""
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    for v in values:
        _check_int(name, v, minimum=0)
    if len(set(values)) != len(values):
        raise ConfigError(f"`{name}` lists an id twice: {values}")
    return tuple(values)


def _parse_moe_layers(value: Any, num_layers: Any) -> tuple[int, ...]:
    """`moe_layers_enum` is a comma-separated string in released configs; a list is accepted.
    Missing (or null): every layer but layer 0, the reference loaders' fallback."""
    if value is None:
        _check_int("num_hidden_layers", num_layers, minimum=1)
        return tuple(range(1, num_layers))
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


def _max_positions(text: dict[str, Any]) -> dict[str, Any]:
    """`max_position_embedding` (released) or `max_position_embeddings` (SGLang's spelling);
    both present must agree."""
    singular, plural = text.get("max_position_embedding"), text.get("max_position_embeddings")
    if singular is not None and plural is not None and singular != plural:
        raise ConfigError(f"`max_position_embedding` ({singular!r}) and "
                          f"`max_position_embeddings` ({plural!r}) disagree")
    value = singular if singular is not None else plural
    return {} if value is None else {"max_position_embedding": value}


# Keys a default-RoPE `rope_scaling` / `rope_parameters` may carry; anything else (a factor,
# partial rotary, YaRN or NTK settings) changes the rotation, which this project does not do.
_DEFAULT_ROPE_KEYS = {"rope_type", "type", "rope_theta"}


def _rope_theta(text: dict[str, Any]) -> dict[str, Any]:
    """`rope_theta`, also read from `rope_parameters` (newer HF configs); any RoPE other than
    the default kind is refused. Returns the `rope_theta` keyword (empty: the default)."""
    theta = text.get("rope_theta")
    for key in ("rope_scaling", "rope_parameters"):
        rope = text.get(key)
        if rope is None or rope == {}:
            continue
        if not isinstance(rope, dict):
            raise ConfigError(f"`{key}` must be a JSON object or null, got {rope!r}")
        kind = rope.get("rope_type", rope.get("type", "default"))
        extra = sorted(set(rope) - _DEFAULT_ROPE_KEYS)
        if kind != "default" or extra:
            what = f"rope_type {kind!r}" if kind != "default" else f"settings {extra}"
            raise ConfigError(f"`{key}` asks for {what}: only default (unscaled) RoPE is "
                              f"implemented, and Step-3 uses it")
        if "rope_theta" in rope:
            if theta is not None and rope["rope_theta"] != theta:
                raise ConfigError(f"`{key}.rope_theta` ({rope['rope_theta']!r}) and "
                                  f"`rope_theta` ({theta!r}) disagree")
            theta = rope["rope_theta"]
    return {} if theta is None else {"rope_theta": theta}
