"""Roofline time of each FFN rank's work (RankWork), vectorized over sampled micro-batches.

The same accounting as ``Roofline.ffn_us`` (docs/afd-model.md §2.2), per rank instead of for
the expected share: routed experts cost their weights once if they got a token plus each
assignment's activation bytes and FLOPs; the shared expert and the dense MLP cost the weights
the rank holds (a 1/G_F slice or all of them) times the rows it runs them on. In replicated
placements the shared expert is one more local expert of the grouped MoE kernel (rows not
assigned to it cost nothing); sliced shared experts and dense MLPs run as plain GEMMs on every
received row, padded to the CUDA-graph bucket (step3_trt/runtime/cuda_graphs.py).
"""

from __future__ import annotations

import numpy as np

from step3_trt.runtime.cuda_graphs import batch_buckets

from .deployment import Deployment
from .placement import RankWork
from .roofline import Roofline

BUCKETS = np.asarray(batch_buckets(1 << 17))


def bucket_rows(rows: np.ndarray) -> np.ndarray:
    """Rows each call runs at: the smallest graph bucket >= rows (0 stays 0)."""
    rows = np.asarray(rows)
    padded = BUCKETS[np.minimum(np.searchsorted(BUCKETS, rows), BUCKETS.size - 1)]
    return np.where(rows > 0, np.maximum(padded, rows), 0)


def op_us(nbytes: np.ndarray, flops: np.ndarray, bw: float, peak: float) -> np.ndarray:
    """Elementwise roofline µs: max(bytes / bw, flops / peak)."""
    return np.maximum(nbytes / bw, flops / peak) * 1e6


def ffn_rank_us(roof: Roofline, dep: Deployment, work: RankWork) -> np.ndarray:
    """[draws, ffn_ranks] µs of each FFN rank's share of one layer."""
    d, wb = roof.dims, dep.weight_bytes
    bw, gemm = roof.hw.hbm_bw * roof.ffn_hbm_eff, roof.hw.gemm_flops(wb) * roof.flop_eff
    act = dep.wire.hidden_bytes + 2  # read the dispatched input, write a bf16 output
    if work.kind == "dense":
        w = d.dense_params() * work.shared_fraction
        rows = bucket_rows(work.shared_rows)
        return op_us(w * wb + rows * d.hidden * act, 2.0 * rows * w, bw, gemm)
    w_e, w_s = d.expert_params(), d.shared_params()
    a, hit = work.assignments, work.experts_hit
    if work.shared_fraction < 1.0:  # a slice of the shared expert on every row
        rows = bucket_rows(work.shared_rows)
        routed = op_us(hit * w_e * wb + a * d.hidden * act, 2.0 * a * w_e, bw, gemm)
        w = w_s * work.shared_fraction
        return routed + op_us(w * wb + rows * d.hidden * act, 2.0 * rows * w, bw, gemm)
    m = work.shared_rows  # the shared expert as one more local expert
    nbytes = (hit * w_e + (m > 0) * w_s) * wb + (a + m) * d.hidden * act
    return op_us(nbytes, 2.0 * (a * w_e + m * w_s), bw, gemm)
