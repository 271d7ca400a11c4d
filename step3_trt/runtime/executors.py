"""The per-layer work of each AFD role, on top of a loaded RankEngine.

An attention executor owns the paged KV cache and runs embedding, attention, the router and the
head; an FFN executor turns (y, routing) into its rank's partial FFN output. The engine core
composes them in-process or across ranks; only the exchange between them differs.

Eager vs CUDA graph is decided once per step, when `AttentionExecutor.batch` builds the step's
batch: a decode batch up to the largest bucket of a `GraphCache` (CUDA engines,
`runtime.cuda_graphs`) is padded to its bucket and marked `graphed`, and every engine call on it
replays a per-layer graph (runtime/cuda_graphs.py) through `_run`, the one place that looks at
the mark. The FFN side decides per call by the number of rows (`FfnExecutor.partial`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from step3_trt.config import Step3Config
from step3_trt.runtime.batch import StepBatch, make_batch
from step3_trt.runtime.cuda_graphs import GraphCache, Tensors
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.scheduler import Chunk

Route = tuple[torch.Tensor, torch.Tensor]  # (topk_weights [T, K], topk_ids [T, K] int32)


class AttentionExecutor:
    def __init__(self, engine: RankEngine, num_blocks: int, max_seq_len: int,
                 graphs: GraphCache | None = None):
        self.engine = engine
        self.graphs = graphs
        self.config = Step3Config.from_dict(engine.arch)
        self.dtype = getattr(torch, engine.meta["dtypes"]["activations"])
        dtype = getattr(torch, engine.meta["dtypes"]["kv_cache"])
        block_size = engine.meta["kv_cache"]["block_size"]
        shape = (self.config.num_hidden_layers, num_blocks, block_size, self.config.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=engine.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=engine.device)
        self.table_width = -(-max_seq_len // block_size)

    def batch(self, chunks: list[Chunk], tables: list[list[int]]) -> StepBatch:
        """The step's batch; a decode step that CUDA graphs serve is padded to its bucket, with
        block tables as wide as the longest sequence allowed, and marked `graphed`."""
        rows = self.graphs.bucket(len(chunks)) if self.graphs is not None else None
        if rows is None or any(len(c.tokens) != 1 for c in chunks) \
                or not self.engine.has("attn_decode"):
            return make_batch(chunks, tables, self.engine.device)
        return make_batch(chunks, tables, self.engine.device, rows, self.table_width,
                          graphed=True)

    def _run(self, batch: StepBatch, name: str, key: tuple, fn: Callable[..., Tensors],
             rows: Tensors, fixed: Tensors = ()) -> Tensors:
        """fn(*rows, *fixed), replayed from a CUDA graph when the batch is `graphed` (outputs are
        then the bucket's static buffers: valid until the next call of this bucket)."""
        if batch.graphed:
            return self.graphs.run(name, key, fn, rows, (None,) * len(rows), fixed)
        return fn(*rows, *fixed)

    @staticmethod
    def _own(t: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        """A result that outlives the bucket's next replay (another micro-batch's call)."""
        return t.clone() if batch.graphed else t

    def embed(self, batch: StepBatch) -> torch.Tensor:
        """[T, hidden] at the batch's tokens."""
        out = self._run(batch, "embed", (), lambda ids: (self.engine("embed", ids),),
                        (batch.ids,))
        return self._own(out[0], batch)

    def attention(self, layer: int, x: torch.Tensor, batch: StepBatch):
        """-> h (residual stream after attention) [T, hidden], y (normalized FFN input)
        [T, hidden], route (MoE layers) or None."""
        moe = self.config.is_moe_layer(layer)
        if batch.is_decode and self.engine.has("attn_decode"):
            rows = (x, batch.positions, batch.slot_mapping, batch.block_tables, batch.seq_lens,
                    batch.cu_seqlens_q)
            out = self._run(batch, "attn_moe" if moe else "attn", (layer,), self._decode(layer),
                            rows, (self.k_cache[layer], self.v_cache[layer]))
            # h outlives this bucket's next replay (another micro-batch); y and route do not
            return self._own(out[0], batch), out[1], (out[2], out[3]) if moe else None
        h, y = self.engine("attn_prefill",
                           *batch.attention_inputs(x, self.k_cache[layer], self.v_cache[layer]),
                           layer=layer)
        return h, y, self.engine("router", y, layer=layer) if moe else None

    def _decode(self, layer: int):
        """attn_decode (+ router) with the graph-cache argument order: row inputs, then caches."""
        def fn(x, positions, slots, tables, lens, cu, k_cache, v_cache):
            h, y = self.engine("attn_decode", x, positions, k_cache, v_cache, slots, tables, lens,
                               cu, layer=layer)
            if not self.config.is_moe_layer(layer):
                return h, y
            return (h, y, *self.engine("router", y, layer=layer))
        return fn

    def logits(self, x: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        """[S, V] float32 at each real sequence's last token."""
        out = self._run(batch, "head", (), lambda rows: (self.engine("head", rows),),
                        (x[batch.last_index],))
        return self._own(out[0], batch)

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [T, V] float32 at every token of the step (the head graph takes any rows)."""
        return self.engine("head", x)


def combine(h: torch.Tensor, partials: list[torch.Tensor]) -> torch.Tensor:
    """h + the sum of the FFN ranks' partials (summed in float32, in the given order)."""
    if len(partials) == 1:
        return h + partials[0]
    return h + torch.stack(partials).float().sum(0).to(h.dtype)


class FfnExecutor:
    def __init__(self, engine: RankEngine, graphs: GraphCache | None = None):
        self.engine = engine
        self.graphs = graphs
        self.config = Step3Config.from_dict(engine.arch)
        self.dtype = getattr(torch, engine.meta["dtypes"]["activations"])
        self.expert_offset = torch.tensor(engine.mapping["expert_offset"], dtype=torch.int32,
                                          device=engine.device)
        # the expert id of graph padding rows: no rank owns -1, so they cost no expert work
        self.no_expert = torch.tensor(-1, dtype=torch.int32, device=engine.device)

    def partial(self, layer: int, y: torch.Tensor, route: Route | None) -> torch.Tensor:
        """This rank's share of the FFN output [T, hidden]. From a CUDA graph (a call up to the
        largest bucket) it is the bucket's static output: valid until the next call of it."""
        if self.graphs is not None and self.graphs.bucket(y.shape[0]) is not None:
            if route is None:
                return self.graphs.run("dense", (layer,), self._dense(layer), (y,), (None,))[0]
            fills = (None, None, self.no_expert)
            return self.graphs.run("moe", (layer,), self._moe(layer), (y, *route), fills)[0]
        if route is None:
            return self.engine("ffn_dense", y, layer=layer)
        weights, ids = route
        return self.engine("ffn_moe", y, weights, ids, self.expert_offset, layer=layer)

    def _dense(self, layer: int):
        return lambda y: (self.engine("ffn_dense", y, layer=layer),)

    def _moe(self, layer: int):
        return lambda y, w, ids: (self.engine("ffn_moe", y, w, ids, self.expert_offset,
                                              layer=layer),)
