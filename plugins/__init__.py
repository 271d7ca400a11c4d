"""step3-trt kernel library: MFA attention, MoE experts and FP8 GEMM as `torch.library` custom ops.

Importing this package registers the ops under the `step3` namespace (``torch.ops.step3.*``).
Each op has a plain-torch reference (the CPU path), a Triton kernel (CUDA tensors; `triton` is
imported lazily) and a fake impl, so `torch.export` / AOTInductor see one opaque node per op.
See plugins/README.md for the table of ops. This package never imports `step3_trt`.
"""

import torch

from plugins._common import has_triton
from plugins.fp8 import fp8_linear, fp8_quantize
from plugins.mfa import kernel_head_dim, kv_append, mfa_decode, mfa_prefill
from plugins.moe import moe_experts

# op name -> version; bump when an op's inputs, attributes or numerics change (engines record it).
# 2 (mfa_*, kv_append): FP8 caches compute QK^T and P.V in e4m3, and FP8 V caches store their
# blocks transposed (plugins/mfa.py)
OP_VERSIONS = {
    "mfa_decode": 2,
    "mfa_prefill": 2,
    "kv_append": 2,
    "moe_experts": 1,
    "fp8_quantize": 1,
    "fp8_linear": 1,
}


def cuda_graph_safe(head_dim: int, activations: torch.dtype) -> bool:
    """True when, for a model with this head dim and activation dtype, every op runs its Triton
    kernel (or cuBLAS) on CUDA tensors: those never synchronize with the host, so a CUDA graph
    can capture them. The references that other cases fall back to (float32, odd head dims)
    loop over data-dependent sets and cannot be captured."""
    return has_triton() and activations in (torch.bfloat16, torch.float16) \
        and kernel_head_dim(head_dim)


__all__ = ["OP_VERSIONS", "cuda_graph_safe", "fp8_linear", "fp8_quantize", "kv_append", "mfa_decode", "mfa_prefill",
           "moe_experts"]
