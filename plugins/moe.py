"""Routed-expert FFN of an expert-parallel rank: `step3::moe_experts`.

For tokens ``x [M, Hd]`` routed to ``topk_ids [M, K]`` with ``topk_weights [M, K]``, and the
stacked weights of the ``E_local`` experts this rank owns (global ids
``expert_offset .. expert_offset + E_local - 1``):

    out[m] = sum_k [ids[m,k] owned] * w[m,k] * Wd_e (silu(Wg_e x[m]) * (Wu_e x[m])),  e = ids[m,k] - offset

    w_gate, w_up  [E_local, I, Hd]      w_down  [E_local, Hd, I]      out  [M, Hd] (x.dtype)

accumulated in float32; the intermediate h = silu(.) * (.) is rounded to x.dtype. BF16/FP16/FP32
weights take no scales. FP8 (e4m3) weights need scales, one of ``[E]`` (per expert), ``[E, out]``
(per channel) or ``[E, ceil(out/128), ceil(in/128)]`` (128x128 blocks), and run W8A8: x and the
rounded h are quantized per 1x128 group (`fp8_quantize(., "group")`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from plugins._common import FP8, check, use_triton
from plugins.fp8 import expand_scale, fp8_dequantize_ref, fp8_quantize_ref


def expert_weight(w: torch.Tensor, s: Optional[torch.Tensor], e: int) -> torch.Tensor:
    """Expert e's weight [out, in] in float32, dequantized with its scale (any layout above)."""
    we = w[e].float()
    if s is None:
        return we
    se = s[e].float()
    if se.dim() <= 1 and se.numel() == we.shape[0] and se.numel() > 1:
        se = se.reshape(-1, 1)  # per channel
    return we * expand_scale(se, we.shape[0], we.shape[1])


def moe_experts_ref(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale,
                    w_down_scale, expert_offset: int) -> torch.Tensor:
    """Reference: a loop over the owned experts that received tokens (float32 math)."""
    fp8 = w_gate.dtype == FP8
    xin = fp8_dequantize_ref(*fp8_quantize_ref(x, "group")) if fp8 else x.float()
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    local = topk_ids.long() - expert_offset
    for e in range(w_gate.shape[0]):
        rows, slot = (local == e).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        a = xin[rows]
        h = F.silu(a @ expert_weight(w_gate, w_gate_scale, e).T) * (a @ expert_weight(w_up, w_up_scale, e).T)
        h = h.to(x.dtype)
        h = fp8_dequantize_ref(*fp8_quantize_ref(h, "group")) if fp8 else h.float()
        y = (h @ expert_weight(w_down, w_down_scale, e).T) * topk_weights[rows, slot, None].float()
        out.index_add_(0, rows, y)
    return out.to(x.dtype)


def _check(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale, w_down_scale):
    check(x.dim() == 2 and topk_ids.dim() == 2 and topk_ids.shape == topk_weights.shape
          and topk_ids.shape[0] == x.shape[0], "moe_experts: x [M, H], topk ids/weights [M, K] expected")
    E, I, H = w_gate.shape
    check(w_up.shape == (E, I, H) and w_down.shape == (E, H, I) and H == x.shape[1],
          "moe_experts: w_gate/w_up [E, I, H] and w_down [E, H, I] expected")
    fp8 = w_gate.dtype == FP8
    check(w_up.dtype == w_gate.dtype and w_down.dtype == w_gate.dtype, "moe_experts: mixed weight dtypes")
    scales = (w_gate_scale, w_up_scale, w_down_scale)
    check(all(s is not None for s in scales) if fp8 else all(s is None for s in scales),
          "moe_experts: FP8 weights need all three scales; other dtypes take none")


@torch.library.custom_op("step3::moe_experts", mutates_args=())
def moe_experts(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                w_gate_scale: Optional[torch.Tensor] = None, w_up_scale: Optional[torch.Tensor] = None,
                w_down_scale: Optional[torch.Tensor] = None, expert_offset: int = 0) -> torch.Tensor:
    """Sum over owned experts of routing weight x SwiGLU expert(x): ``[M, Hd] -> [M, Hd]``.

    CUDA: tokens sorted by expert inside the op, grouped Triton GEMMs (each expert's weights read
    once per BM-token block; experts without tokens cost nothing); CPU: `moe_experts_ref`.
    """
    _check(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale, w_down_scale)
    fp8 = w_gate.dtype == FP8
    ok = x.dtype in (torch.bfloat16, torch.float16) and (fp8 or w_gate.dtype == x.dtype)
    if use_triton(x, w_gate, w_up, w_down) and ok and x.shape[0] > 0 \
            and all(w.stride(-1) == 1 for w in (w_gate, w_up, w_down)):
        from plugins.triton_kernels.moe import moe_experts as moe_gpu
        return moe_gpu(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale,
                       w_down_scale, expert_offset)
    return moe_experts_ref(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale,
                           w_down_scale, expert_offset)


@moe_experts.register_fake
def _(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale=None, w_up_scale=None,
      w_down_scale=None, expert_offset=0):
    _check(x, topk_ids, topk_weights, w_gate, w_up, w_down, w_gate_scale, w_up_scale, w_down_scale)
    return torch.empty_like(x)
