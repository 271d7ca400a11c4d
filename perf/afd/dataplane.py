"""Device work the runtime adds around the engines' graphs (docs/afd-model.md §10.5): FP8
quantization and per-destination packing of the dispatched tokens, the combine of returned
partials, dequantization and assembly on the FFN side, and the CUDA-graph input / output copies
of step3_trt/runtime/cuda_graphs.py (inputs copied into a bucket's static buffers, outputs
copied out inside the graph, the attention output h and the logits cloned). Each is priced as
its bytes read + written at the HBM rate plus a fixed ``op_us`` per kernel.

All functions return µs for one call of one rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from .deployment import WireFormat
from .step3 import Step3Dims

SEQ_INPUT_BYTES = 8 + 8 + 4 + 4  # positions (int64), KV slot (int64), length, cu_seqlens (int32)


@dataclass(frozen=True)
class DeviceCosts:
    """HBM rate (bytes/s) and the fixed cost of one small kernel (µs, assumed)."""

    hbm_bw: float
    op_us: float
    table_width: int  # block-table entries per sequence (max_seq_len / block_size)

    def __call__(self, nbytes: float, ops: int) -> float:
        return nbytes / self.hbm_bw * 1e6 + ops * self.op_us


def attention_side_us(c: DeviceCosts, dims: Step3Dims, wire: WireFormat, tokens: int,
                      copies_out: float, slots: int, moe: bool) -> float:
    """One attention rank's call: ``tokens`` sequences, ``copies_out`` token copies sent (and
    as many partials combined), ``slots`` routing pairs per copy."""
    h = dims.hidden
    a2f = wire.a2f_bytes_per_token(h, slots) if slots else _hidden_bytes(wire, h)
    quant = tokens * (h * 2 + _hidden_bytes(wire, h)) if wire.hidden_bytes == 1 else 0.0
    pack = 2 * copies_out * a2f
    combine = copies_out * h * wire.return_bytes + tokens * h * 2 * 2  # partials, h in, x out
    route = tokens * dims.top_k * (wire.weight_bytes + wire.id_bytes) if moe else 0
    bind = 2 * tokens * (h * 2 + SEQ_INPUT_BYTES + c.table_width * 4)
    outputs = 2 * (2 * tokens * h * 2 + route) + 2 * tokens * h * 2  # h, y, route; h cloned
    ops = (1 if quant else 0) + 1 + 1 + 6 + (4 if moe else 2) + 1
    return c(quant + pack + combine + bind + outputs, ops)


def ffn_side_us(c: DeviceCosts, dims: Step3Dims, wire: WireFormat, rows: float,
                slots: int) -> float:
    """One FFN rank's call on ``rows`` received (or all-gathered) rows."""
    h = dims.hidden
    a2f = wire.a2f_bytes_per_token(h, slots) if slots else _hidden_bytes(wire, h)
    assemble = 2 * rows * a2f
    dequant = rows * (_hidden_bytes(wire, h) + h * 2) if wire.hidden_bytes == 1 else 0.0
    bind = 2 * rows * (h * 2 + slots * (wire.weight_bytes + wire.id_bytes))
    output = 2 * rows * h * wire.return_bytes
    ops = 1 + (1 if dequant else 0) + (3 if slots else 1) + 1
    return c(assemble + dequant + bind + output, ops)


def head_side_us(c: DeviceCosts, dims: Step3Dims, tokens: int) -> float:
    """Embedding and head calls of one micro-batch per step, beyond the head graph itself:
    their input copies, output copies and clones (float32 logits) and the greedy argmax read."""
    h, v = dims.hidden, dims.vocab
    embed = 2 * tokens * 8 + 2 * 2 * tokens * h * 2  # ids in; output copy and clone
    head = 2 * tokens * h * 2 + 2 * 2 * tokens * v * 4 + tokens * v * 4
    return c(embed + head, 6)


def _hidden_bytes(wire: WireFormat, hidden: int) -> int:
    """Bytes of one token's hidden state on the wire (values and, for FP8, group scales)."""
    return wire.a2f_bytes_per_token(hidden, 0)
