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
                    _L + "moe.down_proj.weight", _L + "share_expert.gate_proj.weight",
                    _L + "share_expert.up_proj.weight", _L + "share_expert.down_proj.weight"),
                   ("partial",), True, "moe"),
    GraphSignature("ffn_dense", "ffn", ("y",),
                   (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight",
                    _L + "mlp.down_proj.weight"), ("partial",), True, "dense"),
)}


def weight_names(sig: GraphSignature, layer: int | None) -> list[str]:
    return [w.format(layer=layer) for w in sig.weights]
