"""CUDA graphs of the per-layer engine calls, one per (graph, layer, batch bucket).

Without them a decode step is launch-bound: each compiled layer graph costs milliseconds of host
work (guards, dozens of kernel launches) for a few hundred microseconds of GPU work
(perf/results/layers_h100.json). AFD exchanges activations between the attention and FFN calls
of every layer, so the unit captured is one engine call of one layer, not a whole step.

A batch of n rows runs at the smallest bucket >= n. Each bucket owns static input and output
buffers shared by all its layers' graphs (one layer runs at a time); a call copies its inputs
in, replays the layer's graph (captured on first use, after one warm-up call that compiles and
tunes the kernels on the real inputs) and returns the static outputs. Those are overwritten by
the next call in the same bucket: callers that keep a result longer must clone it. All graphs
of a `GraphCache` share one memory pool, so their temporaries share memory.
"""

from __future__ import annotations

from typing import Callable

import torch

import plugins

Tensors = tuple[torch.Tensor, ...]


def batch_buckets(max_rows: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5x powers of two; at most a third of a
    bucket is padding) up to and including `max_rows`."""
    sizes, p = {max_rows}, 1
    while p < max_rows:
        sizes.update(b for b in (p, p + p // 2) if b < max_rows)
        p *= 2
    return sorted(sizes)


class _Bucket:
    """Static buffers of one bucket: inputs (allocated from the first call's shapes, with the
    bucket's row count) and the outputs each captured graph copies its results into."""

    def __init__(self, rows: int):
        self.rows = rows
        self.inputs: list[torch.Tensor] | None = None
        self.bound: list[torch.Tensor | None] = []  # the tensors last copied in (kept alive)
        self.outputs: list[torch.Tensor] | None = None
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}

    def bind(self, inputs: Tensors, fills: Tensors) -> Tensors:
        """Copy the call's inputs into the static buffers. The first input's length n is the
        call's row count; an input with n + e rows (e.g. cu_seqlens, n + 1) gets rows + e.
        Rows past an input's own length take its `fill` (None: left as they are). An input that
        is the very tensor copied in last time is not copied again (a step's batch tensors serve
        every layer; nothing writes them in place)."""
        n = inputs[0].shape[0]
        if self.inputs is None:
            self.inputs = [torch.empty((self.rows + x.shape[0] - n, *x.shape[1:]), dtype=x.dtype,
                                       device=x.device) for x in inputs]
            self.bound = [None] * len(inputs)
        for i, (buf, x, fill) in enumerate(zip(self.inputs, inputs, fills)):
            if self.bound[i] is x:
                continue
            self.bound[i] = x
            buf[:x.shape[0]].copy_(x)
            if x.shape[0] < buf.shape[0] and fill is not None:
                buf[x.shape[0]:].copy_(fill)
        return tuple(self.inputs)


class GraphCache:
    @classmethod
    def for_engine(cls, runtime, engine) -> "GraphCache | None":
        """The cache a rank uses under build-config `runtime` settings: buckets up to
        `max_batch` for CUDA engines with `cuda_graphs` on whose ops all run GPU kernels
        (`plugins.cuda_graph_safe`: bf16/fp16, a power-of-two head dim); else None (eager)."""
        act = getattr(torch, engine.meta["dtypes"]["activations"])
        if engine.device.type != "cuda" or not runtime.cuda_graphs \
                or not plugins.cuda_graph_safe(engine.arch["head_dim"], act):
            return None
        return cls(batch_buckets(runtime.max_batch), engine.device)

    def __init__(self, buckets: list[int], device: torch.device):
        self.buckets = sorted(buckets)
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self._buckets: dict[tuple[str, int], _Bucket] = {}

    def bucket(self, rows: int) -> int | None:
        """The smallest bucket holding `rows`, or None when the call is too large for graphs."""
        return next((b for b in self.buckets if b >= rows), None)

    def captured(self) -> int:
        """Graphs captured so far (every graph, layer and bucket)."""
        return sum(len(b.graphs) for b in self._buckets.values())

    def run(self, name: str, key: tuple, fn: Callable[..., Tensors], rows: Tensors,
            fills: Tensors, fixed: Tensors = ()) -> Tensors:
        """fn(*rows, *fixed) for a call whose `rows` inputs share their first dimension (padded
        to the bucket with `fills`, None = leave stale rows), `fixed` inputs (caches, weights)
        being the same tensors at every call with this `key`. Returns the bucket's outputs,
        sliced to the call's rows."""
        n = rows[0].shape[0]
        size = self.bucket(n)
        b = self._buckets.get((name, size))
        if b is None:
            b = self._buckets[name, size] = _Bucket(size)
        static = b.bind(rows, fills)
        graph = b.graphs.get(key)
        if graph is None:
            graph = b.graphs[key] = self._capture(b, fn, static + tuple(fixed))
        graph.replay()
        return tuple(o[:n] for o in b.outputs)

    def _capture(self, b: _Bucket, fn, args: Tensors) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up: compiles, tunes kernels, allocates workspaces
            out = fn(*args)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if b.outputs is None:
            b.outputs = [torch.empty_like(o) for o in out]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            for buf, o in zip(b.outputs, fn(*args)):
                buf.copy_(o)
        return graph
