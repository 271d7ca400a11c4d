"""Every engine graph's signature: runtime inputs, weight inputs (tensor-name templates, `{layer}`
filled per layer), outputs. Written into engine.json so the runtime needs no model source."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ROPE_COS, ROPE_SIN = "rope.cos", "rope.sin"
_L = "model.layers.{layer}."


@dataclass(frozen=True)
class GraphSignature:
    name: str
    role: str
    runtime_inputs: tuple[str, ...]
    weights: tuple[str, ...]  # tensor-name templates, in input order after the runtime inputs
    outputs: tuple[str, ...]
    per_layer: bool  # True: called once per layer with that layer's weights
    layer_kind: str = "any"  # "any", "moe" or "dense": which layers it serves

    def to_dict(self) -> dict:
        return asdict(self)


_ATTN_RUNTIME = ("x", "positions", "k_cache", "v_cache", "slot_mapping", "block_tables",
                 "seq_lens", "cu_seqlens_q")
_ATTN_WEIGHTS = (ROPE_COS, ROPE_SIN, _L + "input_layernorm.weight", _L + "self_attn.q_proj.weight",
                 _L + "self_attn.inter_norm.weight", _L + "self_attn.wq.weight",
                 _L + "self_attn.k_proj.weight", _L + "self_attn.v_proj.weight",
                 _L + "self_attn.o_proj.weight", _L + "post_attention_layernorm.weight")

SIGNATURES: dict[str, GraphSignature] = {s.name: s for s in (
    GraphSignature("embed", "attention", ("ids",), ("model.embed_tokens.weight",), ("x",), False),
    GraphSignature("attn_prefill", "attention", _ATTN_RUNTIME, _ATTN_WEIGHTS, ("h", "y"), True),
    GraphSignature("attn_decode", "attention", _ATTN_RUNTIME, _ATTN_WEIGHTS, ("h", "y"), True),
    GraphSignature("router", "attention", ("y",), (_L + "moe.gate.weight",),
                   ("topk_weights", "topk_ids"), True, "moe"),
    GraphSignature("head", "attention", ("x",), ("model.norm.weight", "lm_head.weight"),
                   ("logits",), False),
    GraphSignature("ffn_moe", "ffn", ("y", "topk_weights", "topk_ids", "expert_offset"),
                   (_L + "moe.gate_proj.weight", _L + "moe.up_proj.weight",
                    _L + "moe.down_proj.weight"), ("partial",), True, "moe"),
    GraphSignature("ffn_shared", "ffn", ("y",),
                   (_L + "share_expert.gate_proj.weight", _L + "share_expert.up_proj.weight",
                    _L + "share_expert.down_proj.weight"), ("partial",), True, "moe"),
    GraphSignature("ffn_dense", "ffn", ("y",),
                   (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight",
                    _L + "mlp.down_proj.weight"), ("partial",), True, "dense"),
)}


def weight_names(sig: GraphSignature, layer: int | None) -> list[str]:
    return [w.format(layer=layer) for w in sig.weights]


# FP8 graphs: (the graph's name for its scales, checkpoint prefix) per quantized linear / expert
FP8_LINEARS = {
    "attn": (("q_proj", "self_attn.q_proj"), ("wq", "self_attn.wq"), ("k_proj", "self_attn.k_proj"),
             ("v_proj", "self_attn.v_proj"), ("o_proj", "self_attn.o_proj")),
    "ffn_moe": (),
    "ffn_shared": (("gate", "share_expert.gate_proj"), ("up", "share_expert.up_proj"),
                   ("down", "share_expert.down_proj")),
    "ffn_dense": (("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"), ("down", "mlp.down_proj")),
}
FP8_EXPERTS = {"ffn_moe": (("gate_proj", "moe.gate_proj"), ("up_proj", "moe.up_proj"),
                           ("down_proj", "moe.down_proj"))}


@dataclass(frozen=True)
class Fp8Layout:
    """How a graph of an FP8 engine takes its scales: after its other weights, per linear its
    weight scale (then its static input scale), per routed-expert projection its weight scale,
    then the K and V cache scales."""
    linears: tuple[str, ...]
    experts: tuple[str, ...]
    static: bool
    kv: bool
    templates: tuple[str, ...]  # the scale tensors' name templates, in input order

    def unpack(self, scales: tuple) -> dict[str, tuple]:
        """name -> (weight scale, input scale or None); expert projection -> (scale,);
        "kv" -> (k scale, v scale) or (None, None)."""
        it, out = iter(scales), {}
        for name in self.linears:
            out[name] = (next(it), next(it) if self.static else None)
        for name in self.experts:
            out[name] = (next(it),)
        out["kv"] = (next(it), next(it)) if self.kv else (None, None)
        return out


def fp8_layout(graph: str, scheme, kv_fp8: bool) -> Fp8Layout | None:
    """The scale inputs of `graph` for an FP8 checkpoint with `scheme` (an Fp8Scheme), or None
    where the graph has no FP8 weights (embed, router, head)."""
    kind = "attn" if graph.startswith("attn_") else graph
    if kind not in FP8_LINEARS:
        return None
    static = scheme.activation_scheme == "static"
    templates = []
    for _, prefix in FP8_LINEARS[kind]:
        templates.append(scheme.scale_name(_L + prefix + ".weight"))
        if static:
            templates.append(_L + prefix + ".input_scale")
    for _, prefix in FP8_EXPERTS.get(kind, ()):
        templates.append(scheme.scale_name(_L + prefix + ".weight"))
    kv = kv_fp8 and kind == "attn"
    if kv:
        templates += [_L + "self_attn.k_scale", _L + "self_attn.v_scale"]
    return Fp8Layout(tuple(k for k, _ in FP8_LINEARS[kind]),
                     tuple(k for k, _ in FP8_EXPERTS.get(kind, ())), static, kv, tuple(templates))


def with_fp8(sig: GraphSignature, layout: Fp8Layout | None) -> GraphSignature:
    """`sig` with the FP8 scale tensors appended to its weights."""
    if layout is None:
        return sig
    return GraphSignature(sig.name, sig.role, sig.runtime_inputs, sig.weights + layout.templates,
                          sig.outputs, sig.per_layer, sig.layer_kind)
