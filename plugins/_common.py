"""Shared helpers of the kernel library (no model code here: `plugins` never imports `step3_trt`)."""

from __future__ import annotations

import functools
import os

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8 e4m3fn
AMAX_FLOOR = 1e-12  # an all-zero group still gets a finite, positive scale
GROUP = 128  # activation group / weight block edge of block-FP8 (DeepSeek layout)


@functools.cache
def has_triton() -> bool:
    """True where `import triton` works (it fails on CPU-only machines)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(*tensors: torch.Tensor) -> bool:
    """Run the Triton kernel when every tensor is on a CUDA device and Triton imports.

    With TRITON_INTERPRET=1 (Triton's CPU interpreter, for debugging kernels without a GPU)
    CPU tensors take the Triton path too.
    """
    if not has_triton():
        return False
    return all(t.is_cuda for t in tensors) or os.environ.get("TRITON_INTERPRET") == "1"


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@functools.cache
def sm_count(index: int) -> int:
    if not torch.cuda.is_available():  # Triton's interpreter on a CPU machine
        return 132
    return torch.cuda.get_device_properties(index).multi_processor_count


def scale_of(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Dequantization scale for FP8 e4m3: max(amax, 1e-12) / 448, float32 (x ~ q * scale)."""
    amax = amax.float().clamp_min(AMAX_FLOOR)
    # tensor / tensor: CUDA turns division by a Python scalar into a multiply by its reciprocal,
    # which can differ in the last bit from the kernels' IEEE division
    return amax / torch.full((), FP8_MAX, dtype=torch.float32, device=amax.device)


def quantize_with(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q = clamp(x / scale, -448, 448) rounded to nearest-even e4m3; the division is IEEE float32."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
