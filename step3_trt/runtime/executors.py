"""The per-layer work of each AFD role, on top of a loaded RankEngine.

An attention executor owns the paged KV cache and runs embedding, attention, the router and the
head; an FFN executor turns (y, routing) into its rank's partial FFN output. The in-process
runner and the MPI workers compose the same executors; only the exchange between them differs.
"""

from __future__ import annotations

import torch

from step3_trt.config import Step3Config
from step3_trt.runtime.batch import StepBatch
from step3_trt.runtime.engine import RankEngine

Route = tuple[torch.Tensor, torch.Tensor]  # (topk_weights [T, K], topk_ids [T, K] int32)


class AttentionExecutor:
    def __init__(self, engine: RankEngine, num_blocks: int):
        self.engine = engine
        self.config = Step3Config.from_dict(engine.arch)
        dtype = getattr(torch, engine.meta["dtypes"]["kv_cache"])
        block_size = engine.meta["kv_cache"]["block_size"]
        shape = (self.config.num_hidden_layers, num_blocks, block_size, self.config.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=engine.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=engine.device)

    def embed(self, batch: StepBatch) -> torch.Tensor:
        return self.engine("embed", batch.ids)

    def attention(self, layer: int, x: torch.Tensor, batch: StepBatch):
        """-> h (residual stream after attention), y (normalized FFN input), route or None."""
        graph = "attn_decode" if batch.is_decode and self.engine.has("attn_decode") \
            else "attn_prefill"
        h, y = self.engine(graph, *batch.attention_inputs(x, self.k_cache[layer],
                                                          self.v_cache[layer]), layer=layer)
        route = self.engine("router", y, layer=layer) if self.config.is_moe_layer(layer) else None
        return h, y, route

    @staticmethod
    def combine(h: torch.Tensor, partials: list[torch.Tensor]) -> torch.Tensor:
        """h + the sum of the FFN ranks' partials (summed in float32)."""
        if len(partials) == 1:
            return h + partials[0]
        return h + torch.stack(partials).float().sum(0).to(h.dtype)

    def logits(self, x: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return self.engine("head", x[batch.last_index])  # [S, V] float32

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [T, V] float32 at every token of the step (the head graph takes any rows)."""
        return self.engine("head", x)


class FfnExecutor:
    def __init__(self, engine: RankEngine):
        self.engine = engine
        self.config = Step3Config.from_dict(engine.arch)
        self.expert_offset = torch.tensor(engine.mapping["expert_offset"], dtype=torch.int32,
                                          device=engine.device)

    def partial(self, layer: int, y: torch.Tensor, route: Route | None) -> torch.Tensor:
        if route is None:
            return self.engine("ffn_dense", y, layer=layer)
        weights, ids = route
        return self.engine("ffn_moe", y, weights, ids, self.expert_offset, layer=layer)
