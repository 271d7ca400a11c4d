"""Per-rank memory plan: weight bytes from the conversion plan (an FFN rank's include its replicas
of the shared expert and the dense MLPs, placement P2), KV-cache capacity from the rest; plus the
vision tower's weight bytes, which no rank holds until there is a vision role."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.config import Step3Config
from step3_trt.checkpoint.layout import text_specs
from step3_trt.convert.plan import REPLICATED_COMPONENTS, plan_conversion
from step3_trt.inspect import kv_bytes_per_token
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import vision_specs

GB = 1024**3
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}


@dataclass(frozen=True)
class RankMemory:
    rank: str
    weight_bytes: int
    replicated_bytes: int  # of weight_bytes: the rank's shared-expert and dense-MLP replicas
    reserve_bytes: int
    kv_bytes_per_token: int  # 0 for FFN ranks
    kv_capacity_tokens: int  # tokens the KV cache gets (0 for FFN ranks)
    budget_bytes: int


def memory_plan(cfg: Step3Config, build: BuildConfig) -> list[RankMemory]:
    """One entry per rank; raises BuildConfigError naming the rank if the plan does not fit."""
    weights, _, kv = build.dtypes.resolved(cfg.torch_dtype)
    budget = int(build.memory.per_rank_gb * GB)
    reserve = int(build.memory.reserve_gb * GB)
    max_seq = build.runtime.max_seq_len or cfg.max_position_embedding
    component = {s.name: s.component for s in text_specs(cfg)}
    out = []
    for plan in plan_conversion(cfg, build):
        w = sum(p.numel for p in plan.pieces) * ELEMENT_BYTES[weights]
        replicas = sum(p.numel for p in plan.pieces
                       if component[p.source] in REPLICATED_COMPONENTS) * ELEMENT_BYTES[weights]
        free = budget - w - reserve
        if free < 0:
            raise BuildConfigError(
                f"{plan.name}: weights ({w / GB:.2f} GiB) + reserve ({reserve / GB:.2f} GiB) "
                f"exceed `memory.per_rank_gb` ({build.memory.per_rank_gb} GiB)")
        per_token, capacity = 0, 0
        if plan.role == "attention":
            per_token = kv_bytes_per_token(cfg, ELEMENT_BYTES[kv])
            capacity = free // per_token
            if build.kv_cache.max_tokens is not None:
                if build.kv_cache.max_tokens > capacity:
                    raise BuildConfigError(
                        f"{plan.name}: `kv_cache.max_tokens` = {build.kv_cache.max_tokens} needs "
                        f"{build.kv_cache.max_tokens * per_token / GB:.2f} GiB, only "
                        f"{free / GB:.2f} GiB is left after weights and reserve")
                capacity = build.kv_cache.max_tokens
            capacity -= capacity % build.kv_cache.block_size
            if capacity < max_seq:
                raise BuildConfigError(
                    f"{plan.name}: the KV cache holds {capacity} tokens, fewer than one sequence "
                    f"of `runtime.max_seq_len` = {max_seq}")
        out.append(RankMemory(plan.name, w, replicas, reserve, per_token, capacity, budget))
    return out


@dataclass(frozen=True)
class VisionMemory:
    parameters: int
    dtype: str  # the activations' dtype: never FP8 (vLLM loads the released tower unquantized)
    weight_bytes: int


def vision_memory(vision: VisionConfig, cfg: Step3Config, build: BuildConfig) -> VisionMemory:
    _, activations, _ = build.dtypes.resolved(cfg.torch_dtype)
    params = sum(math.prod(s.shape) for s in vision_specs(vision))
    return VisionMemory(params, activations, params * ELEMENT_BYTES[activations])


def format_memory_plan(plan: list[RankMemory], build: BuildConfig,
                       vision: VisionMemory | None = None) -> str:
    lines = [f"Memory plan for build config `{build.name}` "
             f"({build.memory.per_rank_gb} GiB per rank):",
             f"  {'rank':<18}{'weights':>12}{'replicas':>11}{'reserve':>10}{'KV cache':>12}"
             f"{'KV tokens':>12}"]
    for r in plan:
        kv = r.kv_capacity_tokens * r.kv_bytes_per_token
        lines.append(f"  {r.rank:<18}{r.weight_bytes / GB:>10.2f}Gi"
                     f"{r.replicated_bytes / GB:>9.2f}Gi{r.reserve_bytes / GB:>8.2f}Gi"
                     f"{kv / GB:>10.2f}Gi{r.kv_capacity_tokens:>12,}")
    lines.append("  (replicas: each FFN rank's copy of the shared experts and dense MLPs, P2)")
    if vision is not None:
        size = f"{vision.weight_bytes / GB:.2f} GiB" if vision.weight_bytes >= GB // 10 else \
            f"{vision.weight_bytes / 2**20:.2f} MiB"
        lines.append(f"  vision tower: {size} of {vision.dtype} weights, not yet assigned to a "
                     f"rank (no vision role yet)")
    return "\n".join(lines)


def memory_plan_dicts(plan: list[RankMemory]) -> list[dict]:
    return [asdict(r) for r in plan]
