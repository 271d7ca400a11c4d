"""Build configs (YAML): how a checkpoint becomes engines. Typed, validated, errors name the key.

Model dimensions are never restated here: they come from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class BuildConfigError(ValueError):
    """A build config that is malformed or inconsistent; the message names the key."""


def choice(*options: str, default: str):
    return field(default=default, metadata={"choices": options})


@dataclass(frozen=True)
class Dtypes:
    weights: str = choice("auto", "float32", "bfloat16", "float16", "fp8", default="auto")
    activations: str = choice("auto", "float32", "bfloat16", "float16", default="auto")
    kv_cache: str = choice("auto", "float32", "bfloat16", "float16", "fp8", default="auto")

    def resolved(self, checkpoint_dtype: str) -> tuple[str, str, str]:
        """(weights, activations, kv_cache) with `auto` filled in: weights take the checkpoint's
        dtype, activations the weights' (bfloat16 under FP8 weights), the KV cache the
        activations'."""
        weights = checkpoint_dtype if self.weights == "auto" else self.weights
        activations = self.activations if self.activations != "auto" else \
            ("bfloat16" if weights == "fp8" else weights)
        kv_cache = activations if self.kv_cache == "auto" else self.kv_cache
        return weights, activations, kv_cache


@dataclass(frozen=True)
class AttentionMapping:
    ranks: int = 1  # data-parallel attention replicas
    tp: int = 1  # tensor parallelism inside one replica (reserved: must be 1 for now)


@dataclass(frozen=True)
class FfnMapping:
    ep: int = 1  # expert-parallel groups: each owns num_experts / ep routed experts
    tp: int = 1  # tensor parallelism inside each expert (intermediate dimension)

    @property
    def ranks(self) -> int:
        return self.ep * self.tp


@dataclass(frozen=True)
class Mapping:
    attention: AttentionMapping = field(default_factory=AttentionMapping)
    ffn: FfnMapping = field(default_factory=FfnMapping)


@dataclass(frozen=True)
class KVCache:
    block_size: int = 16  # tokens per block
    max_tokens: int | None = None  # per attention rank; None = whatever memory leaves
    # share the KV of full blocks across requests with the same prefix (content-addressed
    # blocks, runtime/block_manager.py); `run/serve --no-prefix-caching` turns it off
    prefix_caching: bool = True


@dataclass(frozen=True)
class Runtime:
    max_batch: int = 16  # sequences in flight per attention rank
    max_tokens_per_step: int = 256  # prefill chunk budget per step
    micro_batches: int = 1  # decode micro-batches in flight under AFD
    max_seq_len: int | None = None  # prompt + output; None = the model's max_position_embedding
    cuda_graphs: bool = True  # CUDA engines: replay decode steps from per-layer CUDA graphs
    # The AFD job's data plane: `mpi` (host buffers) or `torch` (torch.distributed point to
    # point: gloo on CPU, NCCL on CUDA); `run/serve --transport` overrides it. The control
    # channel of an mpiexec job is always MPI. (`inproc`, queues between threads, serves the
    # unit tests; the in-process runner calls its FFN engines directly.)
    transport: str = choice("mpi", "torch", default="mpi")
    # Hidden states on the attention -> FFN link: `auto` = FP8 e4m3 with one float32 scale per
    # 128 elements for FP8 engines, the activation dtype otherwise; `fp8` / `activations` force
    # one. FFN -> attention partials are always in the activation dtype.
    wire: str = choice("auto", "fp8", "activations", default="auto")

    def wire_hidden(self, quantization: str, activations: str) -> str:
        """The torch dtype name of hidden states on the attention -> FFN link."""
        fp8 = self.wire == "fp8" or (self.wire == "auto" and quantization == "fp8")
        return "float8_e4m3fn" if fp8 else activations


@dataclass(frozen=True)
class Memory:
    per_rank_gb: float = 16.0  # device (or host) memory one rank may use
    reserve_gb: float = 1.0  # activations, workspace, runtime overhead


@dataclass(frozen=True)
class BuildConfig:
    name: str = "unnamed"
    device: str = choice("cpu", "cuda", default="cpu")
    backend: str = choice("inductor", "onnx", "tensorrt", default="inductor")
    # How inductor graphs are stored: `aoti` = AOTInductor packages compiled at build time;
    # `exported` = serialized torch.export programs that `torch.compile` compiles when a rank
    # loads them (for machines where AOTI packages do not load; see docs/decisions.md).
    graph_format: str = choice("aoti", "exported", default="aoti")
    quantization: str = choice("none", "fp8", default="none")
    dtypes: Dtypes = field(default_factory=Dtypes)
    mapping: Mapping = field(default_factory=Mapping)
    kv_cache: KVCache = field(default_factory=KVCache)
    runtime: Runtime = field(default_factory=Runtime)
    memory: Memory = field(default_factory=Memory)

    @classmethod
    def from_dict(cls, raw: Any) -> "BuildConfig":
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "BuildConfig":
        path = Path(path)
        if not path.is_file():
            raise BuildConfigError(f"build config {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise BuildConfigError(f"{path}: not valid YAML: {e}") from None
        try:
            return cls.from_dict(raw if raw is not None else {})
        except BuildConfigError as e:
            raise BuildConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Stable hash of every setting (engines record it and refuse another config's)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> None:
        positive = {"mapping.attention.ranks": self.mapping.attention.ranks,
                    "mapping.attention.tp": self.mapping.attention.tp,
                    "mapping.ffn.ep": self.mapping.ffn.ep, "mapping.ffn.tp": self.mapping.ffn.tp,
                    "kv_cache.block_size": self.kv_cache.block_size,
                    "runtime.max_batch": self.runtime.max_batch,
                    "runtime.max_tokens_per_step": self.runtime.max_tokens_per_step,
                    "runtime.micro_batches": self.runtime.micro_batches,
                    "kv_cache.max_tokens": self.kv_cache.max_tokens,
                    "runtime.max_seq_len": self.runtime.max_seq_len,
                    "memory.per_rank_gb": self.memory.per_rank_gb}
        for key, value in positive.items():
            if value is not None and value <= 0:
                raise BuildConfigError(f"`{key}` must be positive, got {value}")
        if self.memory.reserve_gb < 0:
            raise BuildConfigError(f"`memory.reserve_gb` must be >= 0, got {self.memory.reserve_gb}")
        if self.mapping.attention.tp != 1:
            raise BuildConfigError("`mapping.attention.tp` must be 1: attention ranks are "
                                   "data-parallel replicas (TP inside attention is not built yet)")
        if (self.quantization == "fp8") != (self.dtypes.weights == "fp8"):
            raise BuildConfigError("`quantization: fp8` and `dtypes.weights: fp8` go together")


def _build(cls, raw: Any, path: str):
    """Instantiate dataclass `cls` from `raw`, checking keys, types and choices."""
    where = path or "the build config"
    if not isinstance(raw, dict):
        raise BuildConfigError(f"`{where}` must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise BuildConfigError(f"unknown key `{key}` (allowed: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _convert(hints[name], value, key, fields[name].metadata.get("choices"))
    return cls(**kwargs)


def _convert(hint, value: Any, key: str, choices):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
    if optional:
        if value is None:
            return None
        hint = next(a for a in hint.__args__ if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, hint):
        raise BuildConfigError(f"`{key}` must be {hint.__name__}, got {value!r}")
    if choices and value not in choices:
        raise BuildConfigError(f"`{key}` must be one of {', '.join(choices)}, got {value!r}")
    return value
