"""The paper's closed-form numbers (arXiv 2507.19427 Tables 2-3, 5-7, §5.1, §3.1, §6) recomputed
from Step-3's dimensions and the paper's hardware table (docs/afd-model.md §7)."""

from __future__ import annotations

import math

from .hardware import hardware
from .step3 import Step3Dims
from .validation import Check, printed, sig

COST_GPUS = ("h800", "h20", "a800", "910b")
# Table 6, Step-3 row: attention cost per 1M tokens at 8K and 32K, FFN cost per 1M tokens.
TABLE6 = {"attn8k": (0.048, 0.040, 0.040, 0.043), "attn32k": (0.176, 0.114, 0.120, 0.133),
          "ffn": (0.015, 0.040, 0.036, 0.035)}
TABLE7 = {"h800": 0.058, "h20": 0.007, "a800": 0.031, "910b": 0.034}
COMM_BUDGET_S = 16.6e-3  # §5.4: the paper's 50 ms / 3, as printed


def unit_costs(gpu: str) -> tuple[float, float]:
    """(USD per FLOP, USD per byte) at full utilisation (Table 5): price per hour / 3600 / rate.
    FP8 FLOPs where the card has FP8, BF16 otherwise."""
    hw = hardware(gpu)
    if hw.price_per_hour is None:
        raise ValueError(f"{gpu} has no price")
    per_s = hw.price_per_hour / 3600.0
    return per_s / hw.fp8_flops, per_s / hw.hbm_bw


def attention_cost_per_mtok(dims: Step3Dims, gpu: str, context: int) -> float:
    """§4.2: max(FLOP_attn * U_flop, Byte_KV * U_byte) + FLOP_linear * U_flop, per 1M tokens
    (USD), with 8-bit KV."""
    uf, ub = unit_costs(gpu)
    core = max(dims.attn_core_flops_per_token(context) * uf,
               dims.kv_bytes_per_token(context, 1) * ub)
    return 1e6 * (core + dims.attn_linear_flops_per_token() * uf)


def ffn_cost_per_mtok(dims: Step3Dims, gpu: str) -> float:
    """§4.2: FLOP_FFN * U_flop per 1M tokens (USD), FFN compute-bound under AFD."""
    return 1e6 * dims.ffn_flops_per_token() * unit_costs(gpu)[0]


def min_sparsity(dims: Step3Dims, gpu: str, budget_s: float = COMM_BUDGET_S) -> float:
    """§5.4: S >= H * FLOPs * L / (Net * Bandwidth * budget * 2/3), Net per 8-GPU server."""
    hw = hardware(gpu)
    net = 8 * hw.nic_bw
    return dims.hidden * hw.fp8_flops * dims.layers / (net * hw.hbm_bw * budget_s * 2 / 3)


def count_checks(dims: Step3Dims) -> list[Check]:
    """Tables 2-3 (per decoded token) and §5.1's arithmetic intensity."""
    rows = []
    for ctx, table, kv, core in ((8192, "Table 2", 2.56e8, 3.27e10),
                                 (32768, "Table 3", 1.02e9, 1.31e11)):
        rows.append(Check(f"KV bytes/token @{ctx // 1024}K", table, kv,
                          dims.kv_bytes_per_token(ctx, 1), "B", sig(kv)))
        rows.append(Check(f"attention core FLOPs/token @{ctx // 1024}K", table, core,
                          dims.attn_core_flops_per_token(ctx), "FLOP", sig(core)))
    rows.append(Check("linear before/after attention FLOPs/token", "Tables 2-3", 2.07e10,
                      dims.attn_linear_flops_per_token(), "FLOP", sig(2.07e10)))
    rows.append(Check("FFN FLOPs/token", "Tables 2-3", 5.33e10, dims.ffn_flops_per_token(),
                      "FLOP", sig(5.33e10)))
    ai = dims.attn_core_flops_per_ctx_token() / dims.kv_elems_per_token()
    rows.append(Check("MFA arithmetic intensity (8-bit KV)", "§5.1", 128, ai, "FLOP/B", 0.0))
    return rows


def cost_checks(dims: Step3Dims) -> list[Check]:
    """Table 5 (H800 unit costs), Table 6 (Step-3 row), Table 7 (minimum MoE sparsity)."""
    uf, ub = unit_costs("h800")
    rows = [Check("H800 USD per FLOP", "Table 5", 2.80e-19, uf, "USD", sig(2.80e-19)),
            Check("H800 USD per byte", "Table 5", 1.66e-16, ub, "USD", sig(1.66e-16))]
    for i, gpu in enumerate(COST_GPUS):
        for key, ctx in (("attn8k", 8192), ("attn32k", 32768)):
            paper = TABLE6[key][i]
            rows.append(Check(f"attention USD/1M tok @{ctx // 1024}K {gpu}", "Table 6", paper,
                              attention_cost_per_mtok(dims, gpu, ctx), "USD", printed(paper, 3)))
        paper = TABLE6["ffn"][i]
        rows.append(Check(f"FFN USD/1M tok {gpu}", "Table 6", paper, ffn_cost_per_mtok(dims, gpu),
                          "USD", printed(paper, 3)))
    for gpu, paper in TABLE7.items():
        rows.append(Check(f"minimum MoE sparsity {gpu}", "Table 7", paper,
                          min_sparsity(dims, gpu), "", printed(paper, 3)))
    s40 = min_sparsity(dims, "h800") * 50 / 40
    rows.append(Check("min sparsity H800 at measured 40 GB/s NIC", "§5.4", 0.073, s40, "",
                      printed(0.073, 3)))
    dsv3 = round((256 + 1) * TABLE7["h800"] - 1)
    rows.append(Check("DSv3 experts needed on H800 ((256+1)S-1)", "§5.4", 14, dsv3, "", 0.0))
    return rows


def budget_checks(dims: Step3Dims, sla_s: float = 50e-3) -> list[Check]:
    """§3.1 stage budgets and §6's L20 sizing, recomputed."""
    per_stage = COMM_BUDGET_S / dims.layers
    rows = [
        Check("per-layer stage budget, 3-stage (50 ms/3/61)", "§6, §7.2", 272.0,
              sla_s / 3 / dims.layers * 1e6, "us", 0.005,
              "paper divides its rounded 16.6 ms by 61"),
        Check("per-stage budget, 4-stage pipeline", "§3.1 fn. 3", 12.5, sla_s / 4 * 1e3, "ms",
              0.0),
    ]
    l20_bw = 864e9
    window = l20_bw * per_stage
    linear = (dims.attn_in_params() + dims.attn_out_params() / 8)  # o_proj TP=8 (§6 fn. 7)
    kv_room = (round(window / 1e6) - round(linear / 1e6)) * 1e6  # the paper's 235 - 67 MB
    tokens = kv_room / dims.kv_elems_per_token()
    ffn_layer = l20_bw * 0.5 * per_stage
    ffn_total = ffn_layer * dims.layers
    servers = math.ceil(dims.ffn_weight_params_total() / (8 * ffn_total))
    rows += [
        Check("L20 bytes readable in 272 us", "§6", 235e6, window, "B", sig(235e6)),
        Check("attention linear weights per GPU (8-bit)", "§6", 67e6, linear, "B", sig(67e6, 2)),
        Check("L20 context tokens within 272 us", "§6", 328e3, tokens, "tok", sig(328e3),
              "(235 - 67) MB / 512 B per token per layer, the paper's rounded terms"),
        Check("L20 FFN bytes per layer at 50% HBM", "§6", 117e6, ffn_layer, "B", sig(117e6)),
        Check("L20 FFN bytes for 61 layers", "§6", 7.1e9, ffn_total, "B", 0.015,
              "paper truncates 7.17 GB to 7.1"),
        Check("L20 cards for Step-3's FFN", "§6", 48, 8 * servers, "GPU", 0.0),
    ]
    return rows
