"""Export one role graph to an ONNX file: the same torch.export program the inductor backend
compiles, translated by `translate.to_onnx`, with a content-addressed cache like the inductor's."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnx
import torch

from step3_trt.engine import graphs
from step3_trt.engine.export import graph_module, runtime_examples
from step3_trt.engine.signatures import GraphSignature
from step3_trt.onnx.translate import UPDATES_KEY, to_onnx

_SOURCES = sorted(Path(__file__).parent.glob("*.py")) + \
    sorted((Path(__file__).parents[2] / "plugins" / "onnx").glob("*.py"))


def exporter_digest() -> str:
    """Hash of the exporter's and the plugin descriptions' sources (part of the cache key)."""
    h = hashlib.sha256()
    for path in _SOURCES:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def cache_key(sig: GraphSignature, arch: dict, weights: list[torch.Tensor],
              runtime: list[torch.Tensor], plugin_versions: dict) -> str:
    """Everything an exported ONNX graph depends on: signature, architecture, shapes and dtypes,
    plugin versions, torch, the graph source and the exporter's source."""
    blob = json.dumps({
        "graph": sig.to_dict(), "arch": {k: arch[k] for k in sorted(arch)},
        "weights": [(tuple(w.shape), str(w.dtype)) for w in weights],
        "runtime": [(t.dim(), str(t.dtype)) for t in runtime], "plugins": plugin_versions,
        "torch": torch.__version__, "exporter": exporter_digest(),
        "graphs_source": hashlib.sha256(Path(graphs.__file__).read_bytes()).hexdigest(),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def export_program(sig: GraphSignature, arch: dict, weights: list[torch.Tensor], act: torch.dtype,
                   kv: torch.dtype, block_size: int):
    """(torch.export program, dynamic axis names per input) on CPU example inputs."""
    examples = runtime_examples(sig, arch, act, kv, block_size, "cpu")
    runtime = [t for t, _ in examples]
    dynamic = [d for _, d in examples] + [None] * len(weights)
    with torch.no_grad():
        program = torch.export.export(graph_module(sig, arch), (*runtime, *weights),
                                      dynamic_shapes=dynamic)
    names = [{axis: dim.__name__ for axis, dim in d.items()} if d else None for d in dynamic]
    return program, names


def export_graph(sig: GraphSignature, arch: dict, weights: list[torch.Tensor], act: torch.dtype,
                 kv: torch.dtype, block_size: int, plugin_versions: dict, out_file: Path,
                 cache_dir: Path) -> tuple[bool, dict[str, str]]:
    """Write `sig`'s ONNX graph to `out_file`. Returns (from the cache?, updates: output ->
    the input it updates). `weights` are the example layer's (their shapes and dtypes matter)."""
    runtime = [t for t, _ in runtime_examples(sig, arch, act, kv, block_size, "cpu")]
    key = cache_key(sig, arch, weights, runtime, plugin_versions)
    cached = cache_dir / f"{sig.name}-{key}.onnx"
    hit = cached.is_file()
    if not hit:
        program, dynamic = export_program(sig, arch, weights, act, kv, block_size)
        docs = {p.name: template for p, template in zip(
            [n for n in program.graph.nodes if n.op == "placeholder"][len(runtime):], sig.weights)}
        exported = to_onnx(program, sig.name, dynamic, sig.outputs, docs)
        onnx.checker.check_model(exported.model, full_check=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}.onnx")
        onnx.save_model(exported.model, tmp)
        os.replace(tmp, cached)
    shutil.copy2(cached, out_file)
    return hit, read_updates(out_file)


def read_updates(path: Path) -> dict[str, str]:
    model = onnx.load_model(path, load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props.get(UPDATES_KEY, "{}"))
