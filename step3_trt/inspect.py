"""`step3-trt inspect`: parameter counts, activated parameters, KV-cache and weight bytes.

Works on a bare `config.json` (counts from the layout, no weights) or on a checkpoint directory
(counts plus the bytes actually stored per dtype, from shard headers only).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from step3_trt.checkpoint.layout import text_specs
from step3_trt.checkpoint.reader import INDEX_FILE, SINGLE_FILE, CheckpointReader
from step3_trt.config import Step3Config

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
COMPONENT_ORDER = ("embedding", "attention", "norm", "dense_mlp", "router", "experts",
                   "shared_expert", "lm_head")


def parameter_counts(cfg: Step3Config) -> dict[str, dict[str, int]]:
    """Per component: total parameters and parameters activated per token.

    Activated = every parameter a token's forward pass multiplies with: routed experts count
    top_k / num_experts of their total; the input embedding table counts 0 (a lookup reads one
    row). Totals count everything.
    """
    totals: dict[str, int] = defaultdict(int)
    for spec in text_specs(cfg):
        totals[spec.component] += math.prod(spec.shape)
    out = {}
    for comp in COMPONENT_ORDER:
        total = totals.get(comp, 0)
        if comp == "experts":
            active = total * cfg.moe_top_k // cfg.moe_num_experts
        elif comp == "embedding":
            active = 0
        else:
            active = total
        out[comp] = {"total": total, "activated": active}
    return out


def kv_bytes_per_token(cfg: Step3Config, bytes_per_element: int) -> int:
    """K and V, one head each (MFA), every layer."""
    return 2 * cfg.num_attention_groups * cfg.head_dim * cfg.num_hidden_layers * bytes_per_element


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Report for a checkpoint directory or a config.json (a directory without weights works)."""
    path = Path(path)
    is_checkpoint = path.is_dir() and ((path / INDEX_FILE).is_file() or (path / SINGLE_FILE).is_file())
    if is_checkpoint:
        reader = CheckpointReader(path).validate()
        cfg = reader.config
    else:
        reader, cfg = None, Step3Config.from_file(path)
    report = inspect_config(cfg, str(path))
    if reader is not None:
        report.pop("weight_bytes_estimated")
        by_dtype: dict[str, int] = defaultdict(int)
        for name in reader.text_names:
            by_dtype[reader.entries[name].dtype] += reader.entries[name].nbytes
        report["weight_bytes"] = dict(by_dtype)
        report["vision_tensors"] = {"count": len(reader.vision_names),
                                    "bytes": sum(reader.entries[n].nbytes for n in reader.vision_names)}
    return report


def inspect_config(cfg: Step3Config, source: str) -> dict[str, Any]:
    """Report from the config alone (weight bytes estimated from `torch_dtype`)."""
    counts = parameter_counts(cfg)
    report: dict[str, Any] = {
        "source": source,
        "config": {"hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                   "moe_layers": len(cfg.moe_layers), "dense_layers": len(cfg.dense_layers),
                   "query_heads": cfg.num_attention_heads, "kv_heads": cfg.num_attention_groups,
                   "head_dim": cfg.head_dim, "experts": cfg.moe_num_experts,
                   "top_k": cfg.moe_top_k, "vocab_size": cfg.vocab_size,
                   "torch_dtype": cfg.torch_dtype},
        "parameters": counts,
        "total_parameters": sum(c["total"] for c in counts.values()),
        "activated_parameters": sum(c["activated"] for c in counts.values()),
        "kv_cache_bytes_per_token": {"bf16": kv_bytes_per_token(cfg, 2),
                                     "fp8": kv_bytes_per_token(cfg, 1)},
    }
    report["weight_bytes"] = {cfg.torch_dtype: report["total_parameters"] * BYTES[cfg.torch_dtype]}
    report["weight_bytes_estimated"] = True
    return report


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("T", 1e12), ("B" if not unit else "G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def format_report(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [f"Step-3 text model: {report['source']}",
             f"  {c['layers']} layers ({c['dense_layers']} dense, {c['moe_layers']} MoE), hidden "
             f"{c['hidden_size']}, {c['query_heads']} query heads x {c['head_dim']} over "
             f"{c['kv_heads']} KV head, {c['experts']} experts top-{c['top_k']}, vocab "
             f"{c['vocab_size']}, {c['torch_dtype']}",
             "",
             f"  {'component':<15}{'total':>12}{'activated/token':>18}"]
    for comp, v in report["parameters"].items():
        lines.append(f"  {comp:<15}{_human(v['total']):>12}{_human(v['activated']):>18}")
    lines += [f"  {'TOTAL':<15}{_human(report['total_parameters']):>12}"
              f"{_human(report['activated_parameters']):>18}",
              "  (activated excludes the input embedding table; routed experts count top_k/E)",
              "",
              f"  KV cache per token: {report['kv_cache_bytes_per_token']['bf16']:,} B (BF16), "
              f"{report['kv_cache_bytes_per_token']['fp8']:,} B (8-bit)"]
    est = " (estimated from torch_dtype)" if report.get("weight_bytes_estimated") else ""
    weights = ", ".join(f"{k} {_human(v, 'B')}" for k, v in report["weight_bytes"].items())
    lines.append(f"  text weights{est}: {weights}")
    if "vision_tensors" in report:
        v = report["vision_tensors"]
        lines.append(f"  vision tensors (skipped by the text path): {v['count']}, "
                     f"{_human(v['bytes'], 'B')}")
    return "\n".join(lines)
