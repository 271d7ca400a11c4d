"""Which slice of which checkpoint tensor each AFD rank gets.

Attention ranks (data-parallel replicas) hold the embedding, every layer's norms, attention
weights and router, the final norm and lm_head. FFN ranks hold the FFN side as placement P2
says (convert/placement.py): rank j = (ep_rank, tp_rank) = divmod(j, tp) owns the routed experts
of its EP group, each sliced along its intermediate dimension by tp_rank, and a replica of the
shared expert and the dense MLPs, sliced the same way by tp_rank. The partials of one EP group's
ranks therefore sum to the exact output of what the group computes (SwiGLU is elementwise in the
intermediate dimension, and the down projection is a sum over it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.layout import TensorSpec, text_specs
from step3_trt.config import Step3Config
from step3_trt.convert.placement import FfnPlacement, split
from step3_trt.quant.scheme import BLOCK, Fp8Scheme

ATTENTION_COMPONENTS = {"embedding", "attention", "norm", "router", "lm_head"}
FFN_COMPONENTS = {"dense_mlp", "experts", "shared_expert"}
REPLICATED_COMPONENTS = {"dense_mlp", "shared_expert"}  # whole in every EP group (P2)


@dataclass(frozen=True)
class Piece:
    """`target` = source[index]: one block of a checkpoint tensor placed on a rank."""
    source: str
    target: str
    index: tuple[tuple[int, int], ...]  # (start, stop) per dimension of the source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.index)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class RankPlan:
    role: str  # "attention" or "ffn"
    rank: int
    mapping: dict
    pieces: list[Piece] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.role}/rank{self.rank}"


def full(spec: TensorSpec) -> tuple[tuple[int, int], ...]:
    return tuple((0, n) for n in spec.shape)


def ffn_placement(cfg: Step3Config, build: BuildConfig) -> FfnPlacement:
    """The job's FFN placement; BuildConfigError naming the key if the model cannot take it."""
    check_mapping(cfg, build)
    return FfnPlacement(cfg.moe_num_experts if cfg.moe_layers else 0, build.mapping.ffn.ep,
                        build.mapping.ffn.tp)


def ffn_mapping(cfg: Step3Config, placement: FfnPlacement, rank: int) -> dict:
    tp = placement.tp
    ep_rank, tp_rank = divmod(rank, tp)
    first, last = placement.experts_of(ep_rank)
    return {"ffn_ranks": placement.ranks, "ep": placement.ep, "tp": tp, "ep_rank": ep_rank,
            "tp_rank": tp_rank, "expert_offset": first, "num_local_experts": last - first,
            "expert_intermediate": split(cfg.moe_intermediate_size, tp, tp_rank),
            "shared_expert": split(cfg.share_expert_dim, tp, tp_rank),
            "dense_mlp": split(cfg.intermediate_size, tp, tp_rank),
            "placement": placement.to_dict()}


def check_mapping(cfg: Step3Config, build: BuildConfig) -> None:
    """EP may split the experts unevenly (near-equal contiguous blocks) but every EP group needs
    one expert at least (a model without MoE layers has none: its EP groups are replicas of the
    dense MLPs); TP slices every FFN weight, so it may not exceed a width."""
    ep, tp = build.mapping.ffn.ep, build.mapping.ffn.tp
    if cfg.moe_layers and ep > cfg.moe_num_experts:
        raise BuildConfigError(f"`mapping.ffn.ep` = {ep} exceeds the model's "
                               f"{cfg.moe_num_experts} experts (each EP group needs one)")
    widths = {"share_expert_dim": cfg.share_expert_dim, "intermediate_size": cfg.intermediate_size}
    if cfg.moe_layers:
        widths["moe_intermediate_size"] = cfg.moe_intermediate_size
    for name, width in widths.items():
        if tp > width:
            raise BuildConfigError(f"`mapping.ffn.tp` = {tp} exceeds `{name}` = {width}")


def ffn_piece(spec: TensorSpec, m: dict) -> Piece:
    """The block of an FFN tensor that the rank with mapping `m` owns."""
    parts = spec.name.split(".")
    proj = parts[-2]  # gate_proj / up_proj / down_proj
    if spec.component == "experts":
        e0 = m["expert_offset"]
        i = m["expert_intermediate"]
        E, a, b = spec.shape
        index = ((e0, e0 + m["num_local_experts"]), i, (0, b)) if proj != "down_proj" else \
            ((e0, e0 + m["num_local_experts"]), (0, a), i)
    else:
        bounds = m["shared_expert"] if spec.component == "shared_expert" else m["dense_mlp"]
        rows, cols = spec.shape
        index = (bounds, (0, cols)) if proj != "down_proj" else ((0, rows), bounds)
    return Piece(spec.name, spec.name, index)


def block_range(r: tuple[int, int], full_len: int, name: str) -> tuple[int, int]:
    """Rows/columns [r0, r1) of a block-FP8 weight -> the range of its 128-wide scale blocks."""
    if r[0] % BLOCK or (r[1] % BLOCK and r[1] != full_len):
        raise BuildConfigError(f"`{name}`: this mapping cuts it at [{r[0]}, {r[1]}), not on the "
                               f"{BLOCK}-wide blocks of its FP8 scales; choose ffn ep/tp so every "
                               f"slice is a multiple of {BLOCK}")
    return r[0] // BLOCK, -(-r[1] // BLOCK)


def ffn_scale_piece(spec: TensorSpec, specs: dict[str, TensorSpec], m: dict,
                    scheme: Fp8Scheme) -> Piece:
    """The block of an FP8 scale tensor that matches the rank's block of its weight (an
    activation scale is whole on every rank)."""
    if spec.name.endswith("input_scale"):
        return Piece(spec.name, spec.name, full(spec))
    weight = specs[scheme.weight_of(spec.name)]
    w = ffn_piece(weight, m).index
    lead, (rows, cols) = w[:-2], w[-2:]
    if scheme.weight_granularity == "per-tensor":
        index = lead or ((0, 1),)
    elif scheme.weight_granularity == "per-channel":
        index = (*lead, rows) if lead else (rows, (0, 1))
    else:
        out, inp = weight.shape[-2:]
        index = (*lead, block_range(rows, out, weight.name), block_range(cols, inp, weight.name))
    return Piece(spec.name, spec.name, index)


def plan_conversion(cfg: Step3Config, build: BuildConfig,
                    scheme: Fp8Scheme | None = None) -> list[RankPlan]:
    """Which block of which tensor goes to which rank. With an FP8 `scheme`, scale tensors
    follow their weights (attention: whole; FFN: the rows/experts/blocks of the rank's slice)."""
    placement = ffn_placement(cfg, build)
    specs = text_specs(cfg) if scheme is None else scheme.checkpoint_specs(text_specs(cfg))
    by_name = {s.name: s for s in specs}
    n_att = build.mapping.attention.ranks
    plans = []
    for r in range(n_att):
        plan = RankPlan("attention", r, {"attention_ranks": n_att, "dp_rank": r,
                                         "placement": placement.to_dict()})
        plan.pieces = [Piece(s.name, s.name, full(s)) for s in specs
                       if s.component in ATTENTION_COMPONENTS]
        plans.append(plan)
    for r in range(placement.ranks):
        m = ffn_mapping(cfg, placement, r)
        plan = RankPlan("ffn", r, m)
        plan.pieces = [ffn_scale_piece(s, by_name, m, scheme) if s.dtype == "float32" else
                       ffn_piece(s, m) for s in specs if s.component in FFN_COMPONENTS]
        plans.append(plan)
    return plans
