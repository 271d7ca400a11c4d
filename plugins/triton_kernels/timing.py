"""GPU timing for the kernels' first-call tuners."""

from __future__ import annotations

import torch


def time_ms(fn, reps: int = 5) -> float:
    """GPU milliseconds per fn(): a ~1 ms device sleep first lets the host queue every launch, so
    host-side launch cost does not leak into the timing of small problems."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(2_000_000)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps
