"""The FP8 checkpoint format: which tensors are FP8, and the scale tensors that go with them.

Described in `quantization_config` of `config.json`:

    {"quant_method": "fp8", "fmt": "e4m3", "weight_granularity": "per-tensor",
     "activation_scheme": "static", "kv_cache_dtype": "fp8_e4m3",
     "modules_to_not_convert": ["model.embed_tokens", "lm_head", "moe.gate", "norm"], ...}

All scales are float32 *dequantization* scales (x ~= q * scale, scale = amax / 448), the
convention of the `step3::fp8_*` plugin ops. Per quantized weight `P.weight`:

=============  ===============================  ==============================  ==================
granularity    linear [out, in]                 stacked experts [E, out, in]    name
=============  ===============================  ==============================  ==================
per-tensor     [1]                              [E]                             P.weight_scale
per-channel    [out, 1]                         [E, out]                        P.weight_scale
block128       [ceil(out/128), ceil(in/128)]    [E, ceil(out/128), ...]         P.weight_scale_inv
=============  ===============================  ==============================  ==================

`block128` is the DeepSeek / released Step-3 FP8 layout (`weight_block_size: [128, 128]`; the
`_inv` suffix is that layout's name for the same multiplier). Linear layers with a static
activation scheme also carry `P.input_scale` [1]; routed experts always quantize their inputs
per 1x128 group on the fly (dynamic). An FP8 KV cache adds `self_attn.k_scale` / `v_scale` [1]
per layer (K measured after RoPE, as the cache stores it).

Read from other producers (a DeepSeek-style block-FP8 release): `fmt` "e4m3" or
"float8_e4m3fn"; scales stored as float32, bfloat16 or float16 (read as float32); the linear
layers named by `modules_to_not_convert` and `ignored_layers` stay unquantized. Each entry names
modules the way transformers' FP8 loader matches them (`should_convert_module`): a regex matched
from the start of the module name up to a `.` boundary (`model.layers.1` covers that layer, not
layer 11), or a suffix (`o_proj`); an entry that is not a valid regex is a shell glob
(`*.moe.gate`, as this project wrote them before).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from step3_trt.checkpoint.layout import TensorSpec

GRANULARITIES = ("per-tensor", "per-channel", "block128")
ACTIVATION_SCHEMES = ("static", "dynamic")
BLOCK = 128
# Components whose weights become FP8; norms, the embedding, the router and lm_head stay.
FP8_COMPONENTS = {"attention", "dense_mlp", "shared_expert", "experts"}
# What `quantize` leaves unquantized, as `modules_to_not_convert` (for other loaders' sake).
NOT_CONVERTED = ("model.embed_tokens", "lm_head", "moe.gate", "norm")
FORMATS = ("e4m3", "float8_e4m3fn")  # `fmt` spellings of float8 e4m3
SCALE_DTYPES = ("float32", "bfloat16", "float16")  # scale tensors as other producers store them
_BOUNDARY = r"(?:(?<=\.)|(?=\.|$))"


def _module_matcher(entry: str) -> Callable[[str], bool]:
    """transformers' rule for one `modules_to_not_convert` entry (see the module docstring)."""
    try:
        rx = re.compile(rf"(?:{entry}){_BOUNDARY}")
    except re.error:
        glob = re.compile(fnmatch.translate(entry))
        return lambda module: glob.match(module) is not None
    return lambda module: rx.match(module) is not None or module.endswith(entry)


class QuantConfigError(ValueError):
    """A `quantization_config` this project cannot read; the message names the field."""


@dataclass(frozen=True)
class Fp8Scheme:
    weight_granularity: str = "per-tensor"
    activation_scheme: str = "static"
    kv_cache_fp8: bool = False
    not_converted: tuple[str, ...] = NOT_CONVERTED  # modules_to_not_convert + ignored_layers

    def __post_init__(self):
        if self.weight_granularity not in GRANULARITIES:
            raise QuantConfigError(f"`weight_granularity` must be one of {GRANULARITIES}, "
                                   f"got {self.weight_granularity!r}")
        if self.activation_scheme not in ACTIVATION_SCHEMES:
            raise QuantConfigError(f"`activation_scheme` must be one of {ACTIVATION_SCHEMES}, "
                                   f"got {self.activation_scheme!r}")
        if self.weight_granularity == "block128" and self.activation_scheme != "dynamic":
            raise QuantConfigError("`activation_scheme` must be 'dynamic' with 128x128 weight "
                                   "blocks (as vLLM requires)")
        if not isinstance(self.not_converted, tuple) or \
                not all(isinstance(e, str) and e for e in self.not_converted):
            raise QuantConfigError(f"`modules_to_not_convert` / `ignored_layers` must list "
                                   f"module names, got {self.not_converted!r}")

    @functools.cached_property
    def _unconverted(self) -> tuple[Callable[[str], bool], ...]:
        return tuple(_module_matcher(e) for e in self.not_converted)

    def converts(self, module: str) -> bool:
        """False for a module `modules_to_not_convert` / `ignored_layers` names."""
        return not any(match(module) for match in self._unconverted)

    # ---- config.json ---------------------------------------------------------------------
    def to_config(self, producer: dict | None = None) -> dict:
        out = {"quant_method": "fp8", "fmt": "e4m3", "weight_granularity": self.weight_granularity,
               "activation_scheme": self.activation_scheme,
               "kv_cache_dtype": "fp8_e4m3" if self.kv_cache_fp8 else "auto",
               "modules_to_not_convert": list(self.not_converted)}
        if self.weight_granularity == "block128":
            out["weight_block_size"] = [BLOCK, BLOCK]
        if producer:
            out["producer"] = producer
        return out

    @classmethod
    def from_config(cls, raw_config: dict) -> "Fp8Scheme | None":
        """The scheme of a checkpoint's config.json, or None for an unquantized checkpoint.
        A DeepSeek-style block-FP8 config (`weight_block_size` [128, 128], dynamic
        activations, no `weight_granularity`) is read as `block128`."""
        q = raw_config.get("quantization_config")
        if q is None:
            return None
        if not isinstance(q, dict) or q.get("quant_method") != "fp8":
            method = q.get("quant_method") if isinstance(q, dict) else q
            raise QuantConfigError(f"quantization_config.quant_method {method!r} is not supported "
                                   f"(only 'fp8')")
        if q.get("fmt", "e4m3") not in FORMATS:
            raise QuantConfigError(f"quantization_config.fmt {q['fmt']!r}: only float8 e4m3 "
                                   f"({' / '.join(FORMATS)}) is supported")
        block = q.get("weight_block_size")
        granularity = q.get("weight_granularity", "block128" if block else "per-tensor")
        if granularity == "block128" and block not in (None, [BLOCK, BLOCK]):
            raise QuantConfigError(f"quantization_config.weight_block_size {block}: only "
                                   f"[{BLOCK}, {BLOCK}] blocks are supported")
        kv = q.get("kv_cache_dtype", "auto")
        if kv not in ("auto", "fp8_e4m3"):
            raise QuantConfigError(f"quantization_config.kv_cache_dtype {kv!r}: "
                                   f"use 'fp8_e4m3' or 'auto'")
        not_converted: list[str] = []
        for key in ("modules_to_not_convert", "ignored_layers"):
            entries = q.get(key)
            if entries is None:
                continue
            if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
                raise QuantConfigError(f"quantization_config.{key} must be a list of module "
                                       f"names, got {entries!r}")
            not_converted += entries
        return cls(granularity, q.get("activation_scheme", "dynamic"), kv == "fp8_e4m3",
                   tuple(dict.fromkeys(not_converted)))

    # ---- tensors -------------------------------------------------------------------------
    def quantizes(self, spec: TensorSpec) -> bool:
        """Whether the checkpoint stores `spec` in FP8 with a scale."""
        return spec.component in FP8_COMPONENTS and \
            spec.name.endswith(("proj.weight", ".wq.weight")) and \
            self.converts(spec.name.removesuffix(".weight"))

    def scale_name(self, weight: str) -> str:
        base = weight.removesuffix(".weight")
        return base + (".weight_scale_inv" if self.weight_granularity == "block128"
                       else ".weight_scale")

    @staticmethod
    def weight_of(scale: str) -> str:
        """`P.weight_scale` / `P.weight_scale_inv` -> `P.weight`."""
        return scale.removesuffix("_inv").removesuffix("_scale")

    def weight_scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Scale shape for a weight of `shape` ([out, in] or stacked [E, out, in])."""
        *lead, out, inp = shape
        if self.weight_granularity == "per-tensor":
            return tuple(lead) if lead else (1,)
        if self.weight_granularity == "per-channel":
            return (*lead, out) if lead else (out, 1)
        return (*lead, -(-out // BLOCK), -(-inp // BLOCK))

    def extra_specs(self, spec: TensorSpec) -> list[TensorSpec]:
        """Scale tensors that accompany `spec` in an FP8 checkpoint (after it, in this order)."""
        if not self.quantizes(spec):
            return []
        base = spec.name.removesuffix(".weight")
        out = [TensorSpec(self.scale_name(spec.name), self.weight_scale_shape(spec.shape),
                          spec.component, spec.layer, dtype="float32", stored=SCALE_DTYPES)]
        if self.activation_scheme == "static" and spec.component != "experts":
            out.append(TensorSpec(base + ".input_scale", (1,), spec.component, spec.layer,
                                  dtype="float32", stored=SCALE_DTYPES))
        if self.kv_cache_fp8 and spec.name.endswith("self_attn.o_proj.weight"):
            attn = base.removesuffix(".o_proj")
            out += [TensorSpec(f"{attn}.{kv}_scale", (1,), "attention", spec.layer,
                               dtype="float32", stored=SCALE_DTYPES) for kv in ("k", "v")]
        return out

    def checkpoint_specs(self, specs: list[TensorSpec]) -> list[TensorSpec]:
        """The text tensors of an FP8 checkpoint, in model order, with their dtypes."""
        out = []
        for spec in specs:
            if self.quantizes(spec):
                out.append(TensorSpec(spec.name, spec.shape, spec.component, spec.layer,
                                      dtype="float8_e4m3fn"))
            else:
                out.append(spec)
            out += self.extra_specs(spec)
        return out
