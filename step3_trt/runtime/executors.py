"""The per-layer work of each AFD role, on top of a loaded RankEngine.

An attention executor owns the paged KV cache and runs embedding, attention, the router and the
head; an FFN executor turns the rows it is sent (`FfnRows`: y, routing, its shared-expert rows)
into its rank's partial FFN output, and `combine` adds the partials to the residual stream. The
engine core composes them in-process or across ranks; only the exchange between them differs.

Eager vs CUDA graph is decided once per step, when `AttentionExecutor.batch` builds the step's
batch: a decode batch up to the largest bucket of a `GraphCache` (CUDA engines,
`runtime.cuda_graphs`) is padded to its bucket and marked `graphed`, and every engine call on it
replays a per-layer graph (runtime/cuda_graphs.py) through `_run`, the one place that looks at
the mark. The FFN side decides per call by the number of rows (`FfnExecutor.partial`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


Partials = list[tuple[torch.Tensor, torch.Tensor]]  # (rows int64 [n], partial [n, hidden]) per FFN rank


def combine(h: torch.Tensor, partials: Partials) -> torch.Tensor:
    """h + the FFN output: each token's partials summed in float32 in FFN-rank order (a token
    has one from every FFN rank it was sent to), so the sum is the same bits run to run."""
    out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    for rows, partial in partials:
        out.index_add_(0, rows, partial.float())  # rows are distinct within one rank's partial
    return h + out.to(h.dtype)


@dataclass(frozen=True)
class FfnRows:
    """The rows one FFN call computes on (runtime/wire_format.py decodes them from messages).

    y [n, hidden] (activation dtype); MoE layers: route = (weights [n, K], global expert ids
    [n, K] int32; slots of experts other ranks own are weight 0, id -1) and `shared` int64 [n_s],
    the rows whose shared-expert work this rank does (placement P2); dense layers: route and
    shared None, every row is this rank's dense work."""
    y: torch.Tensor
    route: Route | None = None
    shared: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.y.shape[0]

    @staticmethod
    def cat(parts: list["FfnRows"]) -> "FfnRows":
        """The rows of several messages in order (one FFN call over every attention rank's)."""
        if len(parts) == 1:
            return parts[0]
        y = torch.cat([p.y for p in parts])
        if parts[0].route is None:
            return FfnRows(y)
        route = (torch.cat([p.route[0] for p in parts]), torch.cat([p.route[1] for p in parts]))
        shared, n = [], 0
        for p in parts:
            shared.append(p.shared + n)
            n += p.rows
        return FfnRows(y, route, torch.cat(shared))


class FfnExecutor:
    """One FFN rank's engine: its routed experts and its replicas of the shared expert and the
    dense MLPs (placement P2, convert/placement.py)."""

    def __init__(self, engine: RankEngine, graphs: GraphCache | None = None):
        self.engine = engine
        self.graphs = graphs
        self.config = Step3Config.from_dict(engine.arch)
        self.dtype = getattr(torch, engine.meta["dtypes"]["activations"])
        self.expert_offset = torch.tensor(engine.mapping["expert_offset"], dtype=torch.int32,
                                          device=engine.device)
        # the expert id of graph padding rows: no rank owns -1, so they cost no expert work
        self.no_expert = torch.tensor(-1, dtype=torch.int32, device=engine.device)

    def partial(self, layer: int, work: FfnRows) -> torch.Tensor:
        """This rank's share of the FFN output of `work`'s rows [n, hidden]: routed experts on
        every row plus the shared expert on `work.shared` (MoE layers), or the dense MLP.
        From a CUDA graph (a call up to the largest bucket) it is the bucket's static output:
        valid until the next call of it."""
        if work.rows == 0:
            return torch.empty_like(work.y)
        if work.route is None:
            return self._run("dense", layer, self._graph("ffn_dense", layer), (work.y,), (None,))
        out = self._run("moe", layer, self._moe(layer), (work.y, *work.route),
                        (None, None, self.no_expert))
        if work.shared.numel():
            shared = self._run("shared", layer, self._graph("ffn_shared", layer),
                               (work.y[work.shared],), (None,))
            out[work.shared] += shared  # routed + shared, row by row
        return out

    def _run(self, name: str, layer: int, fn, rows: tuple, fills: tuple) -> torch.Tensor:
        if self.graphs is not None and self.graphs.bucket(rows[0].shape[0]) is not None:
            return self.graphs.run(name, (layer,), fn, rows, fills)[0]
        return fn(*rows)[0]

    def _graph(self, graph: str, layer: int):
        return lambda y: (self.engine(graph, y, layer=layer),)

    def _moe(self, layer: int):
        return lambda y, w, ids: (self.engine("ffn_moe", y, w, ids, self.expert_offset,
                                              layer=layer),)
