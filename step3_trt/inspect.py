"""`step3-trt inspect`: parameter counts, activated parameters, KV-cache and weight bytes.

Works on a bare `config.json` (counts from the layout, no weights) or on a checkpoint directory
(counts plus the bytes actually stored per dtype, from shard headers only). A config with a
`vision_config` adds the vision tower's parameters (run once per image, so never "activated per
token") and, for a checkpoint, checks its vision tensors.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from step3_trt.checkpoint.layout import text_specs
from step3_trt.checkpoint.reader import INDEX_FILE, SINGLE_FILE, CheckpointReader
from step3_trt.config import ConfigError, Step3Config
from step3_trt.presets import PRESETS, VISION_PRESETS, vlm_config
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import ENCODER, PROJECTOR, vision_specs
from step3_trt.vision.windows import GLOBAL_VIEW, WINDOW_VIEW

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
COMPONENT_ORDER = ("embedding", "attention", "norm", "dense_mlp", "router", "experts",
                   "shared_expert", "lm_head")
VISION_COMPONENTS = (ENCODER, PROJECTOR)


def parameter_counts(cfg: Step3Config,
                     vision: VisionConfig | None = None) -> dict[str, dict[str, int]]:
    """Per component: total parameters and parameters activated per token.

    Activated = every parameter a token's forward pass multiplies with: routed experts count
    top_k / num_experts of their total; the input embedding table counts 0 (a lookup reads one
    row), and so does the vision tower (it runs once per image, not per token). Totals count
    everything; vision components are listed only when there is a tower.
    """
    totals: dict[str, int] = defaultdict(int)
    for spec in [*text_specs(cfg), *(vision_specs(vision) if vision else [])]:
        totals[spec.component] += math.prod(spec.shape)
    out = {}
    for comp in COMPONENT_ORDER + (VISION_COMPONENTS if vision else ()):
        total = totals.get(comp, 0)
        if comp == "experts":
            active = total * cfg.moe_top_k // cfg.moe_num_experts
        elif comp in ("embedding", *VISION_COMPONENTS):
            active = 0
        else:
            active = total
        out[comp] = {"total": total, "activated": active}
    return out


def vision_of(raw: dict[str, Any]) -> VisionConfig | None:
    """The vision tower of a config.json object; None for a text-only config."""
    return VisionConfig.from_dict(raw) if isinstance(raw, dict) and "vision_config" in raw \
        else None


def preset_configs(name: str) -> tuple[Step3Config, VisionConfig | None]:
    raw = vlm_config(PRESETS[name], VISION_PRESETS.get(name))
    return Step3Config.from_dict(raw), vision_of(raw)


def path_configs(path: str | Path) -> tuple[Step3Config, VisionConfig | None]:
    """Text and vision config of a checkpoint directory or a config.json file."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    cfg = Step3Config.from_file(file)
    try:
        return cfg, vision_of(json.loads(file.read_text()))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


def kv_bytes_per_token(cfg: Step3Config, bytes_per_element: int) -> int:
    """K and V, one head each (MFA), every layer."""
    return 2 * cfg.num_attention_groups * cfg.head_dim * cfg.num_hidden_layers * bytes_per_element


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Report for a checkpoint directory or a config.json (a directory without weights works)."""
    path = Path(path)
    is_checkpoint = path.is_dir() and ((path / INDEX_FILE).is_file() or (path / SINGLE_FILE).is_file())
    cfg, vision = path_configs(path)
    report = inspect_config(cfg, str(path), vision)
    if is_checkpoint:
        from step3_trt.vision.load import validate_vision

        reader = CheckpointReader(path).validate()
        if vision is not None:
            validate_vision(reader, vision)
        report.pop("weight_bytes_estimated")
        by_dtype: dict[str, int] = defaultdict(int)
        for name in reader.text_names:
            by_dtype[reader.entries[name].dtype] += reader.entries[name].nbytes
        report["weight_bytes"] = dict(by_dtype)
        report["vision_tensors"] = {"count": len(reader.vision_names),
                                    "bytes": sum(reader.entries[n].nbytes for n in reader.vision_names)}
    return report


def inspect_config(cfg: Step3Config, source: str,
                   vision: VisionConfig | None = None) -> dict[str, Any]:
    """Report from the config alone (weight bytes estimated from `torch_dtype`)."""
    counts = parameter_counts(cfg, vision)
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
    if vision is not None:
        report["vision_parameters"] = sum(counts[c]["total"] for c in VISION_COMPONENTS)
        report["vision"] = {"hidden_size": vision.hidden_size, "layers": vision.num_hidden_layers,
                            "heads": vision.num_attention_heads,
                            "intermediate_size": vision.intermediate_size,
                            "patch_size": vision.patch_size, "image_size": vision.image_size,
                            "output_hidden_size": vision.output_hidden_size,
                            "projector_stride": vision.projector_stride,
                            "embeddings_per_global_view": vision.embeddings_per_view(GLOBAL_VIEW),
                            "embeddings_per_window": vision.embeddings_per_view(WINDOW_VIEW)}
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
    lines = [f"Step-3 model: {report['source']}",
             f"  {c['layers']} layers ({c['dense_layers']} dense, {c['moe_layers']} MoE), hidden "
             f"{c['hidden_size']}, {c['query_heads']} query heads x {c['head_dim']} over "
             f"{c['kv_heads']} KV head, {c['experts']} experts top-{c['top_k']}, vocab "
             f"{c['vocab_size']}, {c['torch_dtype']}"]
    if "vision" in report:
        v = report["vision"]
        lines.append(f"  vision tower: {v['layers']} layers, width {v['hidden_size']}, "
                     f"{v['heads']} heads, MLP {v['intermediate_size']}, patch {v['patch_size']}; "
                     f"{v['embeddings_per_global_view']} embeddings per global view, "
                     f"{v['embeddings_per_window']} per window")
    else:
        lines.append("  no vision tower (text-only config)")
    lines += ["",
             f"  {'component':<15}{'total':>12}{'activated/token':>18}"]
    for comp, v in report["parameters"].items():
        lines.append(f"  {comp:<15}{_human(v['total']):>12}{_human(v['activated']):>18}")
    lines += [f"  {'TOTAL':<15}{_human(report['total_parameters']):>12}"
              f"{_human(report['activated_parameters']):>18}",
              "  (activated excludes the input embedding table and the vision tower, which runs "
              "once per image; routed experts count top_k/E)"]
    if "vision_parameters" in report:
        vision = report["vision_parameters"]
        lines.append(f"  (text model {_human(report['total_parameters'] - vision)}, vision tower "
                     f"{_human(vision)})")
    lines += [
              "",
              f"  KV cache per token: {report['kv_cache_bytes_per_token']['bf16']:,} B (BF16), "
              f"{report['kv_cache_bytes_per_token']['fp8']:,} B (8-bit)"]
    est = " (estimated from torch_dtype)" if report.get("weight_bytes_estimated") else ""
    weights = ", ".join(f"{k} {_human(v, 'B')}" for k, v in report["weight_bytes"].items())
    lines.append(f"  {'weights' if est else 'text weights'}{est}: {weights}")
    if "vision_tensors" in report:
        v = report["vision_tensors"]
        lines.append(f"  vision tensors: {v['count']}, {_human(v['bytes'], 'B')}")
    return "\n".join(lines)
