"""Loading one rank's engine: check its manifest, load weights and compiled graphs, call graphs.

Needs no model source: graph signatures (which weights feed which input) come from engine.json,
and the plugin ops from `plugins`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import plugins
from step3_trt.checkpoint.reader import TensorStore
from step3_trt.manifest import ENGINES, FORMAT_VERSION, ArtifactError


def load_inductor_graph(file: Path, graph_format: str):
    """A callable graph: an AOTInductor package as it is, or an exported program compiled now
    (dynamic shapes, so every batch size shares one compile)."""
    if graph_format == "aoti":
        return torch._inductor.aoti_load_package(str(file))
    if graph_format == "exported":
        return torch.compile(torch.export.load(str(file)).module(), dynamic=True, fullgraph=True)
    raise ArtifactError(f"{file}: unknown graph format {graph_format!r}; rebuild the engines")


class RankEngine:
    def __init__(self, rank_dir: str | Path, device: str | torch.device = "cpu",
                 build_digest: str | None = None):
        self.dir = Path(rank_dir)
        path = self.dir / "engine.json"
        if not path.is_file():
            raise ArtifactError(f"{self.dir}: no engine.json (missing rank, or not an engine)")
        self.meta = json.loads(path.read_text())
        self._check(build_digest)
        self.device = torch.device(device)
        self.role, self.rank = self.meta["role"], self.meta["rank"]
        self.arch, self.mapping = self.meta["architecture"], self.meta["mapping"]
        self.weights: dict[str, torch.Tensor] = {}
        for sub in self.meta["weight_dirs"]:
            store = TensorStore(self.dir / sub)
            for name in store.entries:
                self.weights[name] = store.get(name).to(self.device)
        self.graphs = {}
        for name, entry in self.meta["graphs"].items():
            file = self.dir / entry["file"]
            if not file.is_file():
                raise ArtifactError(f"{self.dir}: graph file {entry['file']} is missing")
            if self.meta["backend"] == "onnx":  # ONNX Runtime (step3_trt/onnx/session.py)
                from step3_trt.onnx.session import load_graph
                self.graphs[name] = load_graph(file, entry, self.device)
            else:
                self.graphs[name] = load_inductor_graph(file, entry.get("format", "aoti"))

    def _check(self, build_digest: str | None) -> None:
        m = self.meta
        if m.get("format") != ENGINES or m.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{self.dir}: engine format {m.get('format')!r} version "
                                f"{m.get('format_version')}, this step3-trt reads {ENGINES!r} "
                                f"version {FORMAT_VERSION}; rebuild the engines")
        for op, version in m.get("plugin_ops", {}).items():
            have = plugins.OP_VERSIONS.get(op)
            if have != version:
                raise ArtifactError(f"{self.dir}: built with plugin op step3::{op} version "
                                    f"{version}, installed plugins have {have}; rebuild")
        if build_digest is not None and m["build_config"]["digest"] != build_digest:
            raise ArtifactError(f"{self.dir}: built for build config "
                                f"`{m['build_config']['name']}` ({m['build_config']['digest']}),"
                                f" expected {build_digest}; rebuild")

    def has(self, graph: str) -> bool:
        return graph in self.graphs

    def __call__(self, graph: str, *runtime_inputs: torch.Tensor, layer: int | None = None):
        """Run `graph` on the runtime inputs plus the weights its signature names for `layer`."""
        sig = self.meta["graphs"][graph]
        weights = [self.weights[w.format(layer=layer)] for w in sig["weights"]]
        out = self.graphs[graph](*runtime_inputs, *weights)
        if isinstance(out, torch.Tensor):  # a single-output graph returns its tensor bare
            return out
        return out[0] if len(sig["outputs"]) == 1 else tuple(out)
