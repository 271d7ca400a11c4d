"""Step-3 text-decoder dimensions and the per-token byte / FLOP counts derived from them.

The dimensions are read from ``Step3Config`` (the released text config is the
``step3_trt.presets.STEP3_TEXT`` preset; ``Step3Dims.from_config`` takes any other). The counts
follow the paper's accounting (§4.1, Tables 2-3): the linear layers around attention and the FFN
cost 2 FLOPs per parameter per token, MFA's core costs 4 FLOPs per query head per head_dim
element per context token (QK^T and PV), and each context token's KV is 2 x head_dim elements
per layer. docs/afd-model.md §1 lists each formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.config import Step3Config
from step3_trt.presets import STEP3_TEXT

from .checks import AfdInputError, positive_int

_STEP3 = Step3Config.from_dict(STEP3_TEXT)


@dataclass(frozen=True)
class Step3Dims:
    """Model dimensions (defaults: the released Step-3, from its config)."""

    hidden: int = _STEP3.hidden_size
    layers: int = _STEP3.num_hidden_layers
    dense_layers: int = len(_STEP3.dense_layers)  # layers 0-3 and 60 in Step-3
    heads: int = _STEP3.num_attention_heads
    head_dim: int = _STEP3.head_dim
    kv_heads: int = _STEP3.num_attention_groups
    q_rank: int = _STEP3.share_q_dim
    experts: int = _STEP3.moe_num_experts
    top_k: int = _STEP3.moe_top_k
    expert_inter: int = _STEP3.moe_intermediate_size
    shared_inter: int = _STEP3.share_expert_dim
    dense_inter: int = _STEP3.intermediate_size
    vocab: int = _STEP3.vocab_size

    @classmethod
    def from_config(cls, cfg: Step3Config) -> "Step3Dims":
        """The dimensions of any Step-3-architecture text config."""
        return cls(hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                   dense_layers=len(cfg.dense_layers), heads=cfg.num_attention_heads,
                   head_dim=cfg.head_dim, kv_heads=cfg.num_attention_groups,
                   q_rank=cfg.share_q_dim, experts=cfg.moe_num_experts, top_k=cfg.moe_top_k,
                   expert_inter=cfg.moe_intermediate_size, shared_inter=cfg.share_expert_dim,
                   dense_inter=cfg.intermediate_size, vocab=cfg.vocab_size)

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "head_dim", "kv_heads", "q_rank", "experts",
                     "top_k", "expert_inter", "shared_inter", "dense_inter", "vocab"):
            positive_int(f"dims.{name}", getattr(self, name))
        if isinstance(self.dense_layers, bool) or not isinstance(self.dense_layers, int) \
                or not 0 <= self.dense_layers <= self.layers:
            raise AfdInputError(f"dims.dense_layers must be in [0, layers], got "
                                f"{self.dense_layers!r}")
        if self.top_k > self.experts:
            raise AfdInputError(f"dims.top_k ({self.top_k}) must be <= experts ({self.experts})")

    @property
    def moe_layers(self) -> int:
        """Number of MoE layers (the rest are dense)."""
        return self.layers - self.dense_layers

    # ---- attention side (per layer) ----
    def attn_in_params(self) -> int:
        """q_proj + k_proj + v_proj + wq parameters (the projections before the core)."""
        kv = 2 * self.kv_heads * self.head_dim * self.hidden
        return self.q_rank * self.hidden + kv + self.heads * self.head_dim * self.q_rank

    def attn_out_params(self) -> int:
        """o_proj parameters."""
        return self.heads * self.head_dim * self.hidden

    def router_params(self) -> int:
        """MoE gate parameters (run on the attention side, MoE layers only)."""
        return self.experts * self.hidden

    def kv_elems_per_token(self) -> int:
        """KV cache elements per context token per layer (K and V heads): 512 for Step-3."""
        return 2 * self.kv_heads * self.head_dim

    def attn_core_flops_per_ctx_token(self) -> int:
        """Core attention FLOPs per decoded token per context token per layer (QK^T + PV)."""
        return 4 * self.heads * self.head_dim

    # ---- FFN side (per layer) ----
    def expert_params(self) -> int:
        """One routed expert's SwiGLU parameters (gate, up, down)."""
        return 3 * self.hidden * self.expert_inter

    def shared_params(self) -> int:
        """The shared expert's parameters."""
        return 3 * self.hidden * self.shared_inter

    def dense_params(self) -> int:
        """A dense layer's MLP parameters."""
        return 3 * self.hidden * self.dense_inter

    def ffn_weight_params_total(self) -> int:
        """All FFN parameters of the model (routed + shared experts, dense MLPs)."""
        moe = self.experts * self.expert_params() + self.shared_params()
        return self.moe_layers * moe + self.dense_layers * self.dense_params()

    # ---- per decoded token, whole model (paper Tables 2-3 columns) ----
    def kv_bytes_per_token(self, context: int, kv_bytes: int) -> float:
        """KV bytes read to decode one token at ``context`` (all layers)."""
        return float(context) * self.layers * self.kv_elems_per_token() * kv_bytes

    def attn_core_flops_per_token(self, context: int) -> float:
        """Core attention FLOPs to decode one token at ``context`` (all layers)."""
        return float(context) * self.layers * self.attn_core_flops_per_ctx_token()

    def attn_linear_flops_per_token(self) -> float:
        """FLOPs of the linear layers before and after attention (all layers)."""
        return 2.0 * self.layers * (self.attn_in_params() + self.attn_out_params())

    def ffn_flops_per_token(self) -> float:
        """Activated FFN FLOPs per token, router included (all layers)."""
        moe = (self.top_k * self.expert_params() + self.shared_params() + self.router_params())
        return 2.0 * (self.moe_layers * moe + self.dense_layers * self.dense_params())


def layer_kinds(dims: Step3Dims) -> dict[str, int]:
    """Layer counts by kind, for summing per-layer times: ``{"moe": 56, "dense": 5}``."""
    kinds = {"moe": dims.moe_layers, "dense": dims.dense_layers}
    return {k: n for k, n in kinds.items() if n > 0}
