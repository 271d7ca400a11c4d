"""The bytes of one data message, shared by the transports: a header (layer, micro-batch, and
the row count of each tensor) and one payload with every tensor's bytes, each padded to 16
bytes so the receiver can view them in place."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from step3_trt.runtime.transport.base import AfdError, Slot

ALIGN = 16


def header(layer: int, micro_batch: int, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """int64 [2 + n]: layer, micro-batch, then each tensor's rows."""
    return torch.tensor([layer, micro_batch, *(t.shape[0] for t in tensors)], dtype=torch.int64)


def header_size(like: Sequence[Slot]) -> int:
    return 2 + len(like)


def _nbytes(rows: int, slot: Slot) -> int:
    n = rows * math.prod(slot.tail) * slot.dtype.itemsize
    return -(-n // ALIGN) * ALIGN


def payload_size(rows: Sequence[int], like: Sequence[Slot]) -> int:
    return sum(_nbytes(r, s) for r, s in zip(rows, like))


def pack(tensors: Sequence[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """uint8 [payload bytes] on `device`: every tensor's bytes, each padded to ALIGN."""
    parts = []
    for t in tensors:
        raw = t.detach().contiguous().view(-1).view(torch.uint8).to(device)
        pad = -raw.numel() % ALIGN
        parts.append(raw)
        if pad:
            parts.append(torch.zeros(pad, dtype=torch.uint8, device=raw.device))
    if not parts:
        return torch.empty(0, dtype=torch.uint8, device=device)
    return torch.cat(parts)


def unpack(rows: Sequence[int], payload: torch.Tensor, like: Sequence[Slot]) -> list[torch.Tensor]:
    """The tensors in `payload` (views of it) with the receiver's dtypes and tails."""
    if len(rows) != len(like):
        raise AfdError(f"a data message holds {len(rows)} tensors, expected {len(like)}")
    if payload.numel() != payload_size(rows, like):
        raise AfdError(f"a data message has {payload.numel()} payload bytes, expected "
                       f"{payload_size(rows, like)} for rows {list(rows)}")
    out, offset = [], 0
    for r, slot in zip(rows, like):
        n = r * math.prod(slot.tail) * slot.dtype.itemsize
        out.append(payload[offset:offset + n].view(slot.dtype).view(r, *slot.tail))
        offset += _nbytes(r, slot)
    return out
