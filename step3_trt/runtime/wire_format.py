"""What the attention -> FFN and FFN -> attention messages of one (layer, micro-batch) hold.

A -> F, one message per destination FFN rank with the rows routed there (expert_dispatch.py):

    hidden   FP8 wire: float8 e4m3 [n, H] and float32 scales [n, ceil(H/128)], one per 1x128
             group (`step3::fp8_quantize(y, "group")`); otherwise the activation dtype [n, H]
    MoE      routing weights [n, K] (activation dtype), global expert ids [n, K] int32 (a slot of
             an expert another rank owns: weight 0, id -1), and `shared` int32 [n_s]: the message
             rows whose shared-expert work this rank does
F -> A: the partial [n, H] in the activation dtype, rows in the message's order.

The FFN rank decodes FP8 hidden states to the activation dtype (q x scale in float32, rounded
once) and its graphs quantize them again where they run FP8: with bfloat16 activations a group's
maximum comes back exactly, so the per-group quantization the routed experts do reproduces the
sent q and scales bit for bit (docs/decisions.md, "FP8 on the wire"). The in-process runner
encodes and decodes the same way (runtime/ffn.py), so both paths compute the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import plugins  # noqa: F401  (registers step3::fp8_quantize)
from plugins._common import GROUP, cdiv
from plugins.fp8 import fp8_dequantize_ref
from step3_trt.runtime.executors import FfnRows
from step3_trt.runtime.transport.base import Slot

FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class WireFormat:
    hidden: int  # H
    top_k: int  # K
    activations: torch.dtype
    fp8: bool  # hidden states as FP8 e4m3 + per-group scales

    @classmethod
    def of_engine(cls, meta: dict) -> "WireFormat":
        """The format an engine was built for (engine.json's `wire`, any rank of the job)."""
        act = getattr(torch, meta["dtypes"]["activations"])
        hidden = meta["wire"]["hidden"]
        if hidden not in ("float8_e4m3fn", meta["dtypes"]["activations"]):
            raise ValueError(f"engine.json: wire hidden dtype {hidden!r} is neither FP8 nor the "
                             f"activation dtype; rebuild the engines")
        arch = meta["architecture"]
        return cls(arch["hidden_size"], arch["moe_top_k"], act, hidden == "float8_e4m3fn")

    @property
    def hidden_dtype(self) -> torch.dtype:
        return FP8 if self.fp8 else self.activations

    # ---- layouts --------------------------------------------------------------------------
    def hidden_slots(self) -> list[Slot]:
        if self.fp8:
            return [Slot(FP8, (self.hidden,)), Slot(torch.float32, (cdiv(self.hidden, GROUP),))]
        return [Slot(self.activations, (self.hidden,))]

    def request_slots(self, moe: bool) -> list[Slot]:
        """What an FFN rank receives per (layer, micro-batch) from one attention rank."""
        route = [Slot(self.activations, (self.top_k,)), Slot(torch.int32, (self.top_k,)),
                 Slot(torch.int32, ())]
        return self.hidden_slots() + (route if moe else [])

    def reply_slots(self) -> list[Slot]:
        return [Slot(self.activations, (self.hidden,))]

    # ---- encoding ---------------------------------------------------------------------------
    def encode_hidden(self, y: torch.Tensor) -> list[torch.Tensor]:
        """y [T, H] -> the hidden-state tensors of the wire, each with T rows (quantized once
        per micro-batch; a message carries their rows)."""
        if not self.fp8:
            return [y]
        if y.shape[0] == 0:
            return [torch.empty(y.shape, dtype=FP8, device=y.device),
                    torch.empty(0, cdiv(self.hidden, GROUP), dtype=torch.float32,
                                device=y.device)]
        q, scale = torch.ops.step3.fp8_quantize(y, "group")
        return [q, scale]

    def decode(self, tensors: list[torch.Tensor], moe: bool) -> FfnRows:
        """A received request message -> the rows an FFN call computes on."""
        n_hidden = len(self.hidden_slots())
        hidden, route = tensors[:n_hidden], tensors[n_hidden:]
        if self.fp8:
            q, scale = hidden
            y = fp8_dequantize_ref(q, scale).to(self.activations) if q.shape[0] else \
                torch.empty(q.shape, dtype=self.activations, device=q.device)
        else:
            (y,) = hidden
        if not moe:
            return FfnRows(y)
        weights, ids, shared = route
        return FfnRows(y, (weights, ids), shared.long())


def nbytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the tensors' data (a message's payload without its header and alignment)."""
    return sum(t.numel() * t.element_size() for t in tensors)
