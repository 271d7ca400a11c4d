"""`step3-trt build`: role checkpoints -> per-role, per-rank engines.

    ENGINE_DIR/manifest.json, ENGINE_DIR/tokenizer/
    ENGINE_DIR/<role>/rank<i>/engine.json, weights (safetensors), graphs/<graph>.pt2
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

import plugins
from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.reader import TensorStore
from step3_trt.checkpoint.writer import atomic_directory, link_or_copy, write_tensors
from step3_trt.config import Step3Config
from step3_trt.convert.memory_plan import memory_plan
from step3_trt.engine.export import compile_graph, default_cache_dir
from step3_trt.engine.signatures import (ROPE_COS, ROPE_SIN, SIGNATURES, fp8_layout, weight_names,
                                         with_fp8)
from step3_trt.manifest import (ENGINES, FORMAT_VERSION, ROLE_CHECKPOINT, ArtifactError,
                                read_manifest, write_json)
from step3_trt.model.load import DTYPES
from step3_trt.model.reference import rope_cos_sin
from step3_trt.quant.scheme import Fp8Scheme

# Build-config dtype names -> torch dtypes (engine.json records the torch names)
TORCH_DTYPES = {**DTYPES, "fp8": torch.float8_e4m3fn}


def graphs_for(role: str, cfg: Step3Config, device: str) -> list[str]:
    """Which graphs a rank needs. A CPU engine decodes through the prefill graph (a chunk of one
    token per sequence); a GPU engine also gets the split-KV decode kernel's graph."""
    if role == "attention":
        names = ["embed", "attn_prefill"] + (["attn_decode"] if device == "cuda" else [])
        return names + (["router"] if cfg.moe_layers else []) + ["head"]
    return (["ffn_moe", "ffn_shared"] if cfg.moe_layers else []) + \
        (["ffn_dense"] if cfg.dense_layers else [])


def example_layer(sig_name: str, cfg: Step3Config) -> int | None:
    sig = SIGNATURES[sig_name]
    if not sig.per_layer:
        return None
    if sig.layer_kind == "moe":
        return cfg.moe_layers[0]
    if sig.layer_kind == "dense":
        return cfg.dense_layers[0]
    return 0


def inputs_digest(role_manifest: dict, build: BuildConfig) -> str:
    blob = json.dumps({"source": role_manifest["source"], "roles": role_manifest["build_config"],
                       "build": build.digest(), "plugins": plugins.OP_VERSIONS,
                       "torch": torch.__version__, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_converted(role_dir: Path, build: BuildConfig) -> dict:
    """The role checkpoints' manifest, refused unless they were converted with `build`."""
    manifest = read_manifest(role_dir, ROLE_CHECKPOINT)
    if manifest["build_config"]["digest"] != build.digest():
        raise ArtifactError(
            f"{role_dir} was converted with build config `{manifest['build_config']['name']}` "
            f"({manifest['build_config']['digest']}), not `{build.name}` ({build.digest()}); "
            f"run `step3-trt convert` with this config first")
    return manifest


def check_memory_plan(role_dir: Path, build: BuildConfig) -> None:
    """BuildConfigError naming the rank when `build`'s per-rank memory plan does not fit the
    model of these role checkpoints (which must have been converted with `build`)."""
    manifest = read_converted(role_dir, build)
    arch = read_role_config(role_dir / manifest["ranks"][0])["architecture"]
    memory_plan(Step3Config.from_dict(arch), build)


def built_from(out: Path, digest: str) -> bool:
    """True when `out` already holds engines built from inputs with this digest."""
    if not (out / "manifest.json").is_file():
        return False
    try:
        return read_manifest(out, ENGINES).get("inputs_digest") == digest
    except ArtifactError:
        return False


def read_role_config(rank_dir: Path) -> dict:
    role_cfg = json.loads((rank_dir / "config.json").read_text())
    if role_cfg.get("format") != ROLE_CHECKPOINT:
        raise ArtifactError(f"{rank_dir}/config.json is not a role checkpoint config")
    return role_cfg


def extra_tensors(role: str, cfg: Step3Config) -> dict[str, torch.Tensor]:
    """Engine data beyond the checkpoint: an attention rank's RoPE tables (float64-computed)."""
    if role != "attention":
        return {}
    cos, sin = rope_cos_sin(torch.arange(cfg.max_position_embedding), cfg.head_dim,
                            cfg.rope_theta)
    return {ROPE_COS: cos, ROPE_SIN: sin}


def write_extra(out: Path, extra: dict[str, torch.Tensor]) -> list[str]:
    """Write the extra tensors (if any); returns the rank's weight directories."""
    if not extra:
        return ["."]
    (out / "extra").mkdir()
    write_tensors(out / "extra", list(extra.items()))
    return [".", "extra"]


def engine_record(role_cfg: dict, build: BuildConfig, act_name: str, kv_name: str,
                  graphs: dict, weight_dirs: list[str]) -> dict:
    """engine.json of one rank: what the runtime needs to load and run it without model source."""
    return {
        "format": ENGINES, "format_version": FORMAT_VERSION, "role": role_cfg["role"],
        "rank": role_cfg["rank"], "mapping": role_cfg["mapping"],
        "architecture": role_cfg["architecture"],
        "dtypes": {"weights": role_cfg["dtype"], "activations": act_name, "kv_cache": kv_name},
        "quantization": role_cfg["quantization"], "plugin_ops": plugins.OP_VERSIONS,
        "graphs": graphs, "weight_dirs": weight_dirs,
        "build_config": {"name": build.name, "digest": build.digest()},
        "kv_cache": {"block_size": build.kv_cache.block_size},
        "wire": {"hidden": build.runtime.wire_hidden(build.quantization, act_name)},
        "backend": build.backend, "device": build.device, "torch": torch.__version__}


def build_engines(role_dir: str | Path, build: BuildConfig, out: str | Path, *,
                  cache_dir: Path | None = None, progress: bool = True) -> tuple[Path, bool]:
    """Build every rank's engine. Returns (out, reused): reused is True when `out` already holds
    engines built from the same inputs, which are then left as they are. A mapping whose memory
    plan does not fit (`memory.per_rank_gb`) is refused before anything is built."""
    check_memory_plan(Path(role_dir), build)
    if build.backend == "onnx":  # ONNX graphs with step3-domain plugin nodes (docs/onnx.md)
        from step3_trt.onnx.build import build_onnx_engines
        return build_onnx_engines(role_dir, build, out, cache_dir=cache_dir, progress=progress)
    role_dir, out = Path(role_dir), Path(out)
    manifest = read_converted(role_dir, build)
    if build.backend != "inductor":
        raise BuildConfigError(f"`backend: {build.backend}` is not available yet; "
                               f"use inductor or onnx")
    if build.device == "cuda" and not torch.cuda.is_available():
        raise BuildConfigError("`device: cuda` but no CUDA GPU is visible")
    digest = inputs_digest(manifest, build)
    if built_from(out, digest):
        return out, True
    cache_dir = cache_dir or default_cache_dir()
    with atomic_directory(out, overwrite=True) as tmp:
        shutil.copytree(role_dir / "tokenizer", tmp / "tokenizer")
        ranks = manifest["ranks"]
        bar = tqdm(ranks, desc="build", unit="rank", disable=not progress)
        for rank_name in bar:
            bar.set_postfix_str(rank_name)
            _build_rank(role_dir / rank_name, build, tmp / rank_name, cache_dir, bar)
        write_json(tmp / "manifest.json", {
            "format": ENGINES, "format_version": FORMAT_VERSION, "inputs_digest": digest,
            "build_config": {"name": build.name, "digest": build.digest()},
            "source": manifest["source"], "ranks": ranks, "backend": build.backend,
            "device": build.device})
        (tmp / "build_config.yaml").write_text(yaml.safe_dump(build.to_dict(), sort_keys=False))
    return out, False


def _build_rank(rank_dir: Path, build: BuildConfig, out: Path, cache_dir: Path, bar) -> None:
    role_cfg = read_role_config(rank_dir)
    arch = role_cfg["architecture"]
    cfg = Step3Config.from_dict(arch)
    role = role_cfg["role"]
    store = TensorStore(rank_dir)
    _, act_name, kv_name = build.dtypes.resolved(role_cfg["dtype"])
    act, kv = TORCH_DTYPES[act_name], TORCH_DTYPES[kv_name]
    kv_name = str(kv).removeprefix("torch.")
    scheme = Fp8Scheme.from_config({"quantization_config": role_cfg["quantization"]}) if \
        role_cfg["quantization"]["method"] == "fp8" else None
    if kv == torch.float8_e4m3fn and not (scheme and scheme.kv_cache_fp8):
        raise BuildConfigError("`dtypes.kv_cache: fp8` needs K/V cache scales in the checkpoint: "
                               "run `step3-trt quantize --kv-cache fp8`")
    (out / "graphs").mkdir(parents=True)
    for f in sorted(p.name for p in rank_dir.glob("*.safetensors*")):
        link_or_copy(rank_dir / f, out / f)
    extra = extra_tensors(role, cfg)
    graph_entries = {}
    for name in graphs_for(role, cfg, build.device):
        fp8 = fp8_layout(name, scheme, kv == torch.float8_e4m3fn) if scheme else None
        sig = with_fp8(SIGNATURES[name], fp8)
        layer = example_layer(name, cfg)
        weights = [(extra[w] if w in extra else store.get(w)).to(build.device)
                   for w in weight_names(sig, layer)]
        hit = compile_graph(sig, arch, weights, act, kv, build.kv_cache.block_size, build.device,
                            plugins.OP_VERSIONS, out / "graphs" / f"{name}.pt2", cache_dir,
                            build.graph_format, fp8)
        bar.write(f"  {out.parent.name}/{out.name}: {name} {'(cached)' if hit else 'compiled'}")
        graph_entries[name] = {"file": f"graphs/{name}.pt2", "format": build.graph_format,
                              **sig.to_dict()}
    weight_dirs = write_extra(out, extra)
    write_json(out / "engine.json",
               engine_record(role_cfg, build, act_name, kv_name, graph_entries, weight_dirs))

