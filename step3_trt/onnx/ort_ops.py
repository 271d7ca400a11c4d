"""ONNX Runtime kernels for the `step3` plugin nodes, backed by the plain-torch references.

Registered through onnxruntime-extensions' Python custom ops (`onnx_op`), which accept an op
type of the form `domain::Name` and so serve the `step3` domain unchanged. One dtype signature
per op can be registered; these are the float32 engines' (the tiny CPU configs). The FP8 ops
have no kernel here: neither numpy nor the extension's Python bridge has a float8 type.
Importing this module registers the kernels (as `import plugins` registers the torch ops).
"""

from __future__ import annotations

import numpy as np
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

from plugins.mfa import kv_append_ref, paged_attention_ref
from plugins.moe import moe_experts_ref
from plugins.onnx import DOMAIN, SPECS

_DT = {"float32": PyCustomOpDef.dt_float, "int32": PyCustomOpDef.dt_int32,
       "int64": PyCustomOpDef.dt_int64}
_ATTR = {"float": PyCustomOpDef.dt_float, "int": PyCustomOpDef.dt_int64,
         "string": PyCustomOpDef.dt_string}

# torch op -> (input dtypes in node order, output dtypes): what the float32 graphs feed
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mfa_decode": (("float32", "float32", "float32", "int32", "int32"), ("float32",)),
    "mfa_prefill": (("float32", "float32", "float32", "int32", "int32", "int32"), ("float32",)),
    "kv_append": (("float32", "float32", "float32", "float32", "int64"), ("float32", "float32")),
    "moe_experts": (("float32", "int32", "float32", "float32", "float32", "float32"),
                    ("float32",)),
}


def library_path() -> str:
    """The custom-op library to pass to `SessionOptions.register_custom_ops_library`."""
    return get_library_path()


def _register(torch_op: str):
    spec = SPECS[torch_op]
    ins, outs = SIGNATURES[torch_op]
    return onnx_op(op_type=f"{DOMAIN}::{spec.op_type}", inputs=[_DT[d] for d in ins],
                   outputs=[_DT[d] for d in outs],
                   attrs={a.name: _ATTR[a.type] for a in spec.attributes})


def _t(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


@_register("mfa_decode")
def mfa_decode(q, k_cache, v_cache, block_tables, seq_lens, sm_scale):
    q, kc, vc, bt, sl = _t(q, k_cache, v_cache, block_tables, seq_lens)
    cu = torch.arange(q.shape[0] + 1, dtype=torch.int32)
    return paged_attention_ref(q, kc, vc, bt, sl, cu, None, None, sm_scale).numpy()


@_register("mfa_prefill")
def mfa_prefill(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, sm_scale):
    args = _t(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q)
    return paged_attention_ref(*args, None, None, sm_scale).numpy()


@_register("kv_append")
def kv_append(k, v, k_cache, v_cache, slot_mapping):
    k, v, slots = _t(k, v, slot_mapping)
    kc, vc = (torch.from_numpy(np.array(c, copy=True)) for c in (k_cache, v_cache))
    kv_append_ref(k, v, kc, vc, slots, None, None)
    return kc.numpy(), vc.numpy()


@_register("moe_experts")
def moe_experts(x, topk_ids, topk_weights, w_gate, w_up, w_down, expert_offset):
    x, ids, w, wg, wu, wd = _t(x, topk_ids, topk_weights, w_gate, w_up, w_down)
    return moe_experts_ref(x, ids, w, wg, wu, wd, None, None, None, int(expert_offset)).numpy()
