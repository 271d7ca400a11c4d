"""FP8 weights back to floating point (the CPU reference path and `generate --checkpoint`)."""

from __future__ import annotations

import torch

from plugins.fp8 import fp8_dequantize_ref


def dequantize(weight: torch.Tensor, scale: torch.Tensor, granularity: str) -> torch.Tensor:
    """weight [out, in] or stacked [E, out, in] (float8 e4m3) with its scale in the layout of
    `step3_trt.quant.scheme` -> float32 of the same shape."""
    if weight.dim() == 2:
        return fp8_dequantize_ref(weight, scale)
    out = torch.empty(weight.shape, dtype=torch.float32)
    for e in range(weight.shape[0]):
        s = scale[e]
        if granularity == "per-tensor":
            s = s.reshape(1)
        elif granularity == "per-channel":
            s = s.reshape(-1, 1)
        out[e] = fp8_dequantize_ref(weight[e], s)
    return out
