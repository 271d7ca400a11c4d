"""`step3-trt build` with the ONNX backend: role checkpoints -> per-role, per-rank ONNX engines.

    ENGINE_DIR/manifest.json, build_config.yaml, tokenizer/, plugins.json (plugin manifest)
    ENGINE_DIR/<role>/rank<i>/engine.json, graphs/<graph>.onnx, weights.onnx,
                              safetensors (linked), extra/ (RoPE tables)

The layout and engine.json are the inductor backend's (step3_trt/engine/build.py), with .onnx
graphs, `updates` per graph and the weight index; the runtime loads either through RankEngine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import onnx
import yaml
from tqdm import tqdm

import plugins
from plugins.onnx import DOMAIN, SPECS, manifest as plugin_manifest
from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.reader import TensorStore
from step3_trt.checkpoint.writer import atomic_directory
from step3_trt.config import Step3Config
from step3_trt.engine.build import (built_from, engine_record, example_layer, extra_tensors,
                                    graphs_for, inputs_digest, read_converted, read_role_config,
                                    write_extra)
from step3_trt.engine.export import default_cache_dir
from step3_trt.engine.signatures import SIGNATURES, weight_names
from step3_trt.manifest import ENGINES, FORMAT_VERSION, write_json
from step3_trt.model.load import DTYPES
from step3_trt.onnx.export import export_graph, exporter_digest
from step3_trt.onnx.translate import OPSET
from step3_trt.onnx.weights import WEIGHTS_FILE, write_weight_index

PLUGIN_MANIFEST = "plugins.json"
_BY_OP_TYPE = {s.op_type: s.torch_op for s in SPECS.values()}


def build_onnx_engines(role_dir: str | Path, converted: BuildConfig, out: str | Path, *,
                       cache_dir: Path | None = None, progress: bool = True) -> tuple[Path, bool]:
    """Build ONNX engines for every rank of `role_dir`, which was converted with `converted`
    (any backend: the role split does not depend on it). Returns (out, reused)."""
    role_dir, out = Path(role_dir), Path(out)
    manifest = read_converted(role_dir, converted)
    if converted.quantization != "none" or converted.dtypes.kv_cache == "fp8":
        raise BuildConfigError("`backend: onnx` with FP8 weights or an FP8 KV cache is not built "
                               "yet (docs/onnx.md)")
    build = dataclasses.replace(converted, backend="onnx")
    digest = hashlib.sha256((inputs_digest(manifest, build) + exporter_digest()).encode())
    digest = digest.hexdigest()[:16]
    if built_from(out, digest):
        return out, True
    cache_dir = cache_dir or default_cache_dir()
    with atomic_directory(out, overwrite=True) as tmp:
        shutil.copytree(role_dir / "tokenizer", tmp / "tokenizer")
        ranks = manifest["ranks"]
        used: dict[str, set[str]] = {}
        bar = tqdm(ranks, desc="build onnx", unit="rank", disable=not progress)
        for rank_name in bar:
            bar.set_postfix_str(rank_name)
            for op, graph in _build_rank(role_dir / rank_name, build, tmp / rank_name, cache_dir,
                                         bar):
                used.setdefault(op, set()).add(graph)
        write_json(tmp / PLUGIN_MANIFEST, {**plugin_manifest(sorted(used)),
                                           "graphs": {op: sorted(g) for op, g in used.items()}})
        write_json(tmp / "manifest.json", {
            "format": ENGINES, "format_version": FORMAT_VERSION, "inputs_digest": digest,
            "build_config": {"name": build.name, "digest": build.digest()},
            "source": manifest["source"], "ranks": ranks, "backend": build.backend,
            "device": build.device, "plugin_manifest": PLUGIN_MANIFEST})
        (tmp / "build_config.yaml").write_text(yaml.safe_dump(build.to_dict(), sort_keys=False))
    return out, False


def plugin_ops(path: Path) -> list[str]:
    """The torch op names of the plugin nodes in one ONNX graph."""
    model = onnx.load_model(path, load_external_data=False)
    return sorted({_BY_OP_TYPE[n.op_type] for n in model.graph.node if n.domain == DOMAIN})


def _build_rank(rank_dir: Path, build: BuildConfig, out: Path, cache_dir: Path,
                bar) -> list[tuple[str, str]]:
    role_cfg = read_role_config(rank_dir)
    arch, role = role_cfg["architecture"], role_cfg["role"]
    cfg = Step3Config.from_dict(arch)
    store = TensorStore(rank_dir)
    _, act_name, kv_name = build.dtypes.resolved(role_cfg["dtype"])
    (out / "graphs").mkdir(parents=True)
    for f in sorted(p.name for p in rank_dir.glob("*.safetensors*")):
        # copied, not hard-linked: ONNX refuses external data in a file with several links
        shutil.copyfile(rank_dir / f, out / f)
    extra = extra_tensors(role, cfg)
    entries, used = {}, []
    for name in graphs_for(role, cfg, build.device):
        sig = SIGNATURES[name]
        weights = [extra[w] if w in extra else store.get(w)
                   for w in weight_names(sig, example_layer(name, cfg))]
        file = out / "graphs" / f"{name}.onnx"
        hit, updates = export_graph(sig, arch, weights, DTYPES[act_name], DTYPES[kv_name],
                                    build.kv_cache.block_size, plugins.OP_VERSIONS, file, cache_dir)
        state = "(cached)" if hit else "exported"
        bar.write(f"  {out.parent.name}/{out.name}: {name}.onnx {state}")
        entries[name] = {"file": f"graphs/{name}.onnx", **sig.to_dict(), "updates": updates}
        used += [(op, name) for op in plugin_ops(file)]
    weight_dirs = write_extra(out, extra)
    write_weight_index(out, weight_dirs)
    write_json(out / "engine.json", {
        **engine_record(role_cfg, build, act_name, kv_name, entries, weight_dirs),
        "weights_index": WEIGHTS_FILE, "onnx": {"opset": OPSET, "plugin_domain": DOMAIN}})
    return used
