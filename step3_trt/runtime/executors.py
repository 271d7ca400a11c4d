"""The per-layer work of each AFD role, on top of a loaded RankEngine.

An attention executor owns the paged KV cache and runs embedding, attention, the router and the
head; an FFN executor turns (y, routing) into its rank's partial FFN output. The in-process
runner and the MPI workers compose the same executors; only the exchange between them differs.

Given a `GraphCache` (CUDA engines, `runtime.cuda_graphs`), decode steps and FFN calls up to the
largest bucket replay per-layer CUDA graphs (runtime/cuda_graphs.py); the attention executor
then pads decode batches to their bucket (`batch`).
"""

from __future__ import annotations

import torch

from step3_trt.config import Step3Config
from step3_trt.runtime.batch import StepBatch, make_batch
from step3_trt.runtime.cuda_graphs import GraphCache
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.scheduler import Chunk

Route = tuple[torch.Tensor, torch.Tensor]  # (topk_weights [T, K], topk_ids [T, K] int32)


class AttentionExecutor:
    def __init__(self, engine: RankEngine, num_blocks: int, max_seq_len: int,
                 graphs: GraphCache | None = None):
        self.engine = engine
        self.graphs = graphs
        self.config = Step3Config.from_dict(engine.arch)
        dtype = getattr(torch, engine.meta["dtypes"]["kv_cache"])
        block_size = engine.meta["kv_cache"]["block_size"]
        shape = (self.config.num_hidden_layers, num_blocks, block_size, self.config.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=engine.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=engine.device)
        self.table_width = -(-max_seq_len // block_size)

    def batch(self, chunks: list[Chunk], tables: list[list[int]]) -> StepBatch:
        """The step's batch; a decode step that CUDA graphs serve is padded to its bucket, with
        block tables as wide as the longest sequence allowed."""
        rows = self.graphs.bucket(len(chunks)) if self.graphs is not None else None
        if rows is None or any(len(c.tokens) != 1 for c in chunks) \
                or not self.engine.has("attn_decode"):
            return make_batch(chunks, tables, self.engine.device)
        return make_batch(chunks, tables, self.engine.device, rows, self.table_width)

    def embed(self, batch: StepBatch) -> torch.Tensor:
        if self._padded(batch):  # cloned: another micro-batch may replay this bucket next
            fn = lambda ids: (self.engine("embed", ids),)  # noqa: E731
            return self.graphs.run("embed", (), fn, (batch.ids,), (None,))[0].clone()
        return self.engine("embed", batch.ids)

    def attention(self, layer: int, x: torch.Tensor, batch: StepBatch):
        """-> h (residual stream after attention), y (normalized FFN input), route or None."""
        decode = batch.is_decode and self.engine.has("attn_decode")
        moe = self.config.is_moe_layer(layer)
        inputs = batch.attention_inputs(x, self.k_cache[layer], self.v_cache[layer])
        if self._padded(batch):
            rows, fixed = (inputs[0], inputs[1], *inputs[4:]), inputs[2:4]
            out = self.graphs.run("attn_moe" if moe else "attn", (layer,), self._graphed(layer),
                                  rows, (None,) * len(rows), fixed)
            # h outlives this bucket's next replay (another micro-batch); y and route do not
            return out[0].clone(), out[1], (out[2], out[3]) if moe else None
        h, y = self.engine("attn_decode" if decode else "attn_prefill", *inputs, layer=layer)
        route = self.engine("router", y, layer=layer) if moe else None
        return h, y, route

    def _padded(self, batch: StepBatch) -> bool:
        """A decode batch built by `batch` for the graphs: a whole bucket, tables of the
        static width."""
        return self.graphs is not None and batch.is_decode and self.engine.has("attn_decode") \
            and batch.block_tables.shape[1] == self.table_width \
            and self.graphs.bucket(batch.num_tokens) == batch.num_tokens

    def _graphed(self, layer: int):
        """attn_decode (+ router) with the graph-cache argument order: row inputs, then caches."""
        def fn(x, positions, slots, tables, lens, cu, k_cache, v_cache):
            h, y = self.engine("attn_decode", x, positions, k_cache, v_cache, slots, tables, lens,
                               cu, layer=layer)
            if not self.config.is_moe_layer(layer):
                return h, y
            return (h, y, *self.engine("router", y, layer=layer))
        return fn

    @staticmethod
    def combine(h: torch.Tensor, partials: list[torch.Tensor]) -> torch.Tensor:
        """h + the sum of the FFN ranks' partials (summed in float32)."""
        if len(partials) == 1:
            return h + partials[0]
        return h + torch.stack(partials).float().sum(0).to(h.dtype)

    def logits(self, x: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        """[S, V] float32 at each real sequence's last token."""
        last = x[batch.last_index]
        if self._padded(batch):
            fn = lambda rows: (self.engine("head", rows),)  # noqa: E731
            return self.graphs.run("head", (), fn, (last,), (None,))[0].clone()
        return self.engine("head", last)

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [T, V] float32 at every token of the step (the head graph takes any rows)."""
        return self.engine("head", x)


class FfnExecutor:
    def __init__(self, engine: RankEngine, graphs: GraphCache | None = None):
        self.engine = engine
        self.graphs = graphs
        self.config = Step3Config.from_dict(engine.arch)
        self.expert_offset = torch.tensor(engine.mapping["expert_offset"], dtype=torch.int32,
                                          device=engine.device)
        # the expert id of graph padding rows: no rank owns -1, so they cost no expert work
        self.no_expert = torch.tensor(-1, dtype=torch.int32, device=engine.device)

    def partial(self, layer: int, y: torch.Tensor, route: Route | None) -> torch.Tensor:
        """This rank's share of the FFN output [T, hidden]. From a CUDA graph it is the
        bucket's static output: valid until the next call in the same bucket."""
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
