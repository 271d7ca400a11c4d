"""The ONNX / TensorRT description of every `step3::*` op (semantics: plugins/README.md)."""

from __future__ import annotations

from plugins import OP_VERSIONS
from plugins.onnx.spec import AttrSpec, PluginSpec, TensorSpec

_ACT = ("bfloat16", "float16", "float32")
_CACHE = ("bfloat16", "float16", "float32", "float8_e4m3fn")
_FP8 = ("float8_e4m3fn",)
_I32 = ("int32",)
_SCALE_DOC = "float32 dequantization scale of an FP8 cache: [1] (per tensor) or [NB] (per block)"


def _cache_inputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("k_cache", _CACHE, ("NB", "BS", "D"), doc="paged key cache"),
            TensorSpec("v_cache", _CACHE, ("NB", "BS", "D"),
                       doc="paged value cache; FP8: each block's bytes hold V^T [D, BS] "
                           "(op version 2)"))


def _scales() -> tuple[TensorSpec, ...]:
    return (TensorSpec("k_scale", ("float32",), ("NS",), optional=True, doc=_SCALE_DOC),
            TensorSpec("v_scale", ("float32",), ("NS",), optional=True, doc=_SCALE_DOC))


_SM_SCALE = AttrSpec("sm_scale", "float", "softmax scale applied to q.k (the graphs pass D**-0.5)")

MFA_DECODE = PluginSpec(
    "mfa_decode", "MfaDecode", OP_VERSIONS["mfa_decode"],
    inputs=(TensorSpec("q", _ACT, ("S", "H", "D"), doc="one query token per sequence"),
            *_cache_inputs(),
            TensorSpec("block_tables", _I32, ("S", "MB"),
                       doc="physical block of each logical block"),
            TensorSpec("seq_lens", _I32, ("S",),
                       doc="cached tokens per sequence, new one included"),
            *_scales()),
    outputs=(TensorSpec("out", _ACT, ("S", "H", "D")),),
    attributes=(_SM_SCALE,),
    summary="paged MFA decode attention: H query heads over one shared K/V head; FP8 caches: "
            "QK^T and P.V in e4m3 (op version 2, plugins/mfa.py)",
    output_dtype_rule="out: q's dtype", shape_rule="out: q's shape")

MFA_PREFILL = PluginSpec(
    "mfa_prefill", "MfaPrefill", OP_VERSIONS["mfa_prefill"],
    inputs=(TensorSpec("q", _ACT, ("T", "H", "D"), doc="query tokens packed over sequences"),
            *_cache_inputs(),
            TensorSpec("block_tables", _I32, ("S", "MB")),
            TensorSpec("seq_lens", _I32, ("S",), doc="cached tokens per sequence, chunk included"),
            TensorSpec("cu_seqlens_q", _I32, ("S+1",), doc="row offsets of each sequence in q"),
            *_scales()),
    outputs=(TensorSpec("out", _ACT, ("T", "H", "D")),),
    attributes=(_SM_SCALE,),
    summary="causal chunked-prefill MFA attention over the paged cache (varlen); FP8 caches as "
            "MfaDecode",
    output_dtype_rule="out: q's dtype", shape_rule="out: q's shape")

KV_APPEND = PluginSpec(
    "kv_append", "KvAppend", OP_VERSIONS["kv_append"],
    inputs=(TensorSpec("k", _ACT, ("T", "D")), TensorSpec("v", _ACT, ("T", "D")),
            *_cache_inputs(),
            TensorSpec("slot_mapping", ("int32", "int64"), ("T",),
                       doc="block * BS + offset of each token; negative = skip"),
            *_scales()),
    outputs=(TensorSpec("k_cache_out", _CACHE, ("NB", "BS", "D")),
             TensorSpec("v_cache_out", _CACHE, ("NB", "BS", "D"))),
    updates={"k_cache_out": "k_cache", "v_cache_out": "v_cache"},
    summary="write the new tokens' K/V into the paged caches (quantizing for FP8)",
    output_dtype_rule="k_cache_out, v_cache_out: the caches' dtypes",
    shape_rule="k_cache_out, v_cache_out: the caches' shapes")

MOE_EXPERTS = PluginSpec(
    "moe_experts", "MoeExperts", OP_VERSIONS["moe_experts"],
    inputs=(TensorSpec("x", _ACT, ("M", "Hd")),
            TensorSpec("topk_ids", ("int32", "int64"), ("M", "K"), doc="expert ids"),
            TensorSpec("topk_weights", ("bfloat16", "float16", "float32"), ("M", "K")),
            TensorSpec("w_gate", _ACT + _FP8, ("E", "I", "Hd")),
            TensorSpec("w_up", _ACT + _FP8, ("E", "I", "Hd")),
            TensorSpec("w_down", _ACT + _FP8, ("E", "Hd", "I")),
            TensorSpec("w_gate_scale", ("float32",), ("E", "*"), optional=True,
                       doc="FP8 only: [E] | [E, I] | [E, ceil(I/128), ceil(Hd/128)]"),
            TensorSpec("w_up_scale", ("float32",), ("E", "*"), optional=True,
                       doc="as w_gate_scale"),
            TensorSpec("w_down_scale", ("float32",), ("E", "*"), optional=True,
                       doc="FP8 only: [E] | [E, Hd] | [E, ceil(Hd/128), ceil(I/128)]")),
    outputs=(TensorSpec("out", _ACT, ("M", "Hd")),),
    attributes=(AttrSpec("expert_offset", "int", "global id of local expert 0; other ids are "
                                                  "skipped"),),
    summary="routed SwiGLU experts of one expert-parallel rank, weighted sum over top-k",
    output_dtype_rule="out: x's dtype", shape_rule="out: x's shape")

FP8_QUANTIZE = PluginSpec(
    "fp8_quantize", "Fp8Quantize", OP_VERSIONS["fp8_quantize"],
    inputs=(TensorSpec("x", _ACT, ("*", "K")),),
    outputs=(TensorSpec("q", _FP8, ("*", "K")),
             TensorSpec("scale", ("float32",), ("*", "G"),
                        doc="tensor: [1]; token: [..., 1]; group: [..., ceil(K/128)]; "
                            "block: [ceil(R/128), ceil(K/128)]")),
    attributes=(AttrSpec("granularity", "string", "tensor | token | group | block"),),
    summary="float8 e4m3 quantization with float32 dequantization scales",
    output_dtype_rule="q: float8_e4m3fn; scale: float32",
    shape_rule="q: x's shape; scale: by granularity (see scale)")

FP8_LINEAR = PluginSpec(
    "fp8_linear", "Fp8Linear", OP_VERSIONS["fp8_linear"],
    inputs=(TensorSpec("x_q", _FP8, ("M", "K")),
            TensorSpec("x_scale", ("float32",), ("*",), doc="[1] | [M, 1] | [M, ceil(K/128)]"),
            TensorSpec("w_q", _FP8, ("N", "K")),
            TensorSpec("w_scale", ("float32",), ("*",),
                       doc="[1] | [N, 1] | [ceil(N/128), ceil(K/128)]")),
    outputs=(TensorSpec("y", ("bfloat16",), ("M", "N")),),
    summary="FP8 x FP8 GEMM y = (x_q x_scale)(w_q w_scale)^T, float32 accumulation",
    output_dtype_rule="y: bfloat16", shape_rule="y: [x_q.shape[0], w_q.shape[0]]")

SPECS: dict[str, PluginSpec] = {s.torch_op: s for s in (
    MFA_DECODE, MFA_PREFILL, KV_APPEND, MOE_EXPERTS, FP8_QUANTIZE, FP8_LINEAR)}
