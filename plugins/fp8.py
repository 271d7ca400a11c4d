"""FP8 (e4m3) quantization and FP8 x FP8 linear layers: `step3::fp8_quantize`, `step3::fp8_linear`.

Scales are float32 *dequantization* scales: ``x ~= q * scale`` with
``scale = max(amax, 1e-12) / 448`` and ``q = round_to_nearest_even(clamp(x / scale, -448, 448))``.

Granularities of `fp8_quantize(x, granularity)`, for ``x [..., K]`` (``block``: ``x [R, K]``):

=========  ================================  ==========================================
name       scale shape                       amax over
=========  ================================  ==========================================
tensor     [1]                               the whole tensor
token      [..., 1]                          each row (last dim)
group      [..., ceil(K/128)]                1x128 slices of each row (activations)
block      [ceil(R/128), ceil(K/128)]        128x128 tiles (weights, DeepSeek layout)
=========  ================================  ==========================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins._common import FP8, GROUP, cdiv, check, quantize_with, scale_of, use_triton

GRANULARITIES = ("tensor", "token", "group", "block")


def fp8_quantize_ref(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch reference of `fp8_quantize` (any device)."""
    check(granularity in GRANULARITIES, f"fp8_quantize: granularity {granularity!r} not in {GRANULARITIES}")
    if granularity == "tensor":
        s = scale_of(x, x.abs().amax().reshape(1))
        return quantize_with(x, s), s
    if granularity == "token":
        s = scale_of(x, x.abs().amax(-1, keepdim=True))
        return quantize_with(x, s), s
    K = x.shape[-1]
    if granularity == "group":
        G = cdiv(K, GROUP)
        xp = F.pad(x.float(), (0, G * GROUP - K)).reshape(*x.shape[:-1], G, GROUP)
        s = scale_of(x, xp.abs().amax(-1))
        q = quantize_with(xp, s[..., None]).reshape(*x.shape[:-1], G * GROUP)[..., :K]
        return q.contiguous(), s
    check(x.dim() == 2, "fp8_quantize: 'block' needs a 2-D tensor")
    R = x.shape[0]
    GR, GK = cdiv(R, GROUP), cdiv(K, GROUP)
    xp = F.pad(x.float(), (0, GK * GROUP - K, 0, GR * GROUP - R)).reshape(GR, GROUP, GK, GROUP)
    s = scale_of(x, xp.abs().amax(dim=(1, 3)))
    q = quantize_with(xp, s[:, None, :, None]).reshape(GR * GROUP, GK * GROUP)[:R, :K]
    return q.contiguous(), s


def expand_scale(s: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A scale of any granularity above, broadcastable to [rows, cols] (float32)."""
    s = s.float()
    if s.numel() == 1:
        return s.reshape(1, 1)
    s = s.reshape(-1, s.shape[-1])
    if s.shape[0] != rows:
        s = s.repeat_interleave(GROUP, 0)[:rows]
    if s.shape[1] not in (1, cols):
        s = s.repeat_interleave(GROUP, 1)[:, :cols]
    return s


def fp8_dequantize_ref(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """q [R, K] fp8 with a scale of any granularity -> float32 [R, K]."""
    return q.float() * expand_scale(s, q.shape[0], q.shape[1])


def fp8_linear_ref(x_q, x_scale, w_q, w_scale) -> torch.Tensor:
    """y = (x_q * x_scale) @ (w_q * w_scale)^T in float32, rounded to bf16."""
    return (fp8_dequantize_ref(x_q, x_scale) @ fp8_dequantize_ref(w_q, w_scale).T).to(torch.bfloat16)


# --------------------------------------------------------------------------- fp8_quantize op
@torch.library.custom_op("step3::fp8_quantize", mutates_args=())
def fp8_quantize(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to float8 e4m3 with float32 scales (granularity: tensor|token|group|block).

    Returns ``(q, scale)``: ``q`` has x's shape (float8_e4m3fn), ``scale`` the shape in the
    module table. CPU: the reference; CUDA: a Triton row/group kernel (``block`` is an offline
    weight format and uses the reference on any device).
    """
    if use_triton(x) and granularity in ("tensor", "token", "group") and x.numel() > 0:
        from plugins.triton_kernels.fp8 import quantize_rows
        return quantize_rows(x, granularity)
    return fp8_quantize_ref(x, granularity)


def _quant_scale_shape(x: torch.Tensor, granularity: str) -> list[int]:
    K = x.shape[-1]
    if granularity == "tensor":
        return [1]
    if granularity == "token":
        return [*x.shape[:-1], 1]
    if granularity == "group":
        return [*x.shape[:-1], cdiv(K, GROUP)]
    return [cdiv(x.shape[0], GROUP), cdiv(K, GROUP)]


@fp8_quantize.register_fake
def _(x, granularity):
    check(granularity in GRANULARITIES, f"fp8_quantize: granularity {granularity!r} not in {GRANULARITIES}")
    return (torch.empty_like(x, dtype=FP8),
            x.new_empty(_quant_scale_shape(x, granularity), dtype=torch.float32))


# --------------------------------------------------------------------------- fp8_linear op
def _check_linear(x_q, x_scale, w_q, w_scale):
    check(x_q.dim() == 2 and w_q.dim() == 2 and x_q.shape[1] == w_q.shape[1],
          f"fp8_linear: x [M, K] and w [N, K] expected, got {tuple(x_q.shape)}, {tuple(w_q.shape)}")
    check(x_q.dtype == FP8 and w_q.dtype == FP8, "fp8_linear: x and w must be float8_e4m3fn")


@torch.library.custom_op("step3::fp8_linear", mutates_args=())
def fp8_linear(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor,
               w_scale: torch.Tensor) -> torch.Tensor:
    """``y[M, N] = (x_q * x_scale) @ (w_q * w_scale)^T`` accumulated in float32, output bf16.

    x_q [M, K] fp8 with x_scale [1] | [M, 1] | [M, ceil(K/128)];
    w_q [N, K] fp8 with w_scale [1] | [N, 1] | [ceil(N/128), ceil(K/128)].
    CUDA: ``torch._scaled_mm`` for tensor/row scales, else a Triton kernel (FP8 ``tl.dot``,
    scales applied per 128-wide K slice); CPU: the reference.
    """
    _check_linear(x_q, x_scale, w_q, w_scale)
    if use_triton(x_q, w_q) and x_q.shape[0] > 0:
        from plugins.triton_kernels.fp8 import linear
        return linear(x_q, x_scale, w_q, w_scale)
    return fp8_linear_ref(x_q, x_scale, w_q, w_scale)


@fp8_linear.register_fake
def _(x_q, x_scale, w_q, w_scale):
    _check_linear(x_q, x_scale, w_q, w_scale)
    return x_q.new_empty((x_q.shape[0], w_q.shape[0]), dtype=torch.bfloat16)
