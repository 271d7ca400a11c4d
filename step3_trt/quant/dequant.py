"""FP8 weights back to floating point (the CPU reference path and `generate --checkpoint`)."""

from __future__ import annotations

import torch

from plugins.fp8 import fp8_dequantize_ref
from plugins.moe import expert_weight


def dequantize(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """weight [out, in] or stacked [E, out, in] (float8 e4m3) with its scale in any layout of
    `step3_trt.quant.scheme` -> float32 of the same shape, as the plugin references read it."""
    if weight.dim() == 2:
        return fp8_dequantize_ref(weight, scale)
    out = torch.empty(weight.shape, dtype=torch.float32)
    for e in range(weight.shape[0]):
        out[e] = expert_weight(weight, scale, e)
    return out
