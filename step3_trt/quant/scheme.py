"""The FP8 checkpoint format: which tensors are FP8, and the scale tensors that go with them.

Described in `quantization_config` of `config.json`:

    {"quant_method": "fp8", "fmt": "e4m3", "weight_granularity": "per-tensor",
     "activation_scheme": "static", "kv_cache_dtype": "fp8_e4m3",
     "modules_to_not_convert": ["model.embed_tokens", "lm_head", "*.moe.gate"], ...}

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
"""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.checkpoint.layout import TensorSpec

GRANULARITIES = ("per-tensor", "per-channel", "block128")
ACTIVATION_SCHEMES = ("static", "dynamic")
BLOCK = 128
# Components whose weights become FP8; norms, the embedding, the router and lm_head stay.
FP8_COMPONENTS = {"attention", "dense_mlp", "shared_expert", "experts"}
NOT_CONVERTED = ["model.embed_tokens", "lm_head", "*.moe.gate", "*norm"]


class QuantConfigError(ValueError):
    """A `quantization_config` this project cannot read; the message names the field."""


@dataclass(frozen=True)
class Fp8Scheme:
    weight_granularity: str = "per-tensor"
    activation_scheme: str = "static"
    kv_cache_fp8: bool = False

    def __post_init__(self):
        if self.weight_granularity not in GRANULARITIES:
            raise QuantConfigError(f"`weight_granularity` must be one of {GRANULARITIES}, "
                                   f"got {self.weight_granularity!r}")
        if self.activation_scheme not in ACTIVATION_SCHEMES:
            raise QuantConfigError(f"`activation_scheme` must be one of {ACTIVATION_SCHEMES}, "
                                   f"got {self.activation_scheme!r}")

    # ---- config.json ---------------------------------------------------------------------
    def to_config(self, producer: dict | None = None) -> dict:
        out = {"quant_method": "fp8", "fmt": "e4m3", "weight_granularity": self.weight_granularity,
               "activation_scheme": self.activation_scheme,
               "kv_cache_dtype": "fp8_e4m3" if self.kv_cache_fp8 else "auto",
               "modules_to_not_convert": NOT_CONVERTED}
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
        if q.get("fmt", "e4m3") != "e4m3":
            raise QuantConfigError(f"quantization_config.fmt {q['fmt']!r}: only e4m3 is supported")
        block = q.get("weight_block_size")
        granularity = q.get("weight_granularity", "block128" if block else "per-tensor")
        if granularity == "block128" and block not in (None, [BLOCK, BLOCK]):
            raise QuantConfigError(f"quantization_config.weight_block_size {block}: only "
                                   f"[{BLOCK}, {BLOCK}] blocks are supported")
        kv = q.get("kv_cache_dtype", "auto")
        if kv not in ("auto", "fp8_e4m3"):
            raise QuantConfigError(f"quantization_config.kv_cache_dtype {kv!r}: "
                                   f"use 'fp8_e4m3' or 'auto'")
        return cls(granularity, q.get("activation_scheme", "dynamic"), kv == "fp8_e4m3")

    # ---- tensors -------------------------------------------------------------------------
    @staticmethod
    def quantizes(spec: TensorSpec) -> bool:
        return spec.component in FP8_COMPONENTS and spec.name.endswith(("proj.weight", ".wq.weight"))

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
                          spec.component, spec.layer, dtype="float32")]
        if self.activation_scheme == "static" and spec.component != "experts":
            out.append(TensorSpec(base + ".input_scale", (1,), spec.component, spec.layer,
                                  dtype="float32"))
        if self.kv_cache_fp8 and spec.name.endswith("self_attn.o_proj.weight"):
            attn = base.removesuffix(".o_proj")
            out += [TensorSpec(f"{attn}.{kv}_scale", (1,), "attention", spec.layer,
                               dtype="float32") for kv in ("k", "v")]
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
