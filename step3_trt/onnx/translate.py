"""torch.export program of one role graph -> ONNX ModelProto (our own FX -> ONNX walk).

The graphs are small and use a few ATen ops (aten_ops.py) plus the `step3::*` plugin ops
(plugin_nodes.py). Inputs keep their Python argument names, outputs take the graph signature's
names, and every input a plugin op updates in place (the KV caches) becomes an extra output
`<input>_out` (ExportedOnnx.updates maps it back). Dynamic dimensions are named after the
torch.export Dims (tokens, seqs, blocks, max_blocks; `seqs + 1` for cu_seqlens_q).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import onnx
import sympy
import torch
from onnx import helper
from torch import fx

from plugins.onnx import DOMAIN, SPECS
from step3_trt.onnx.aten_ops import EMITTERS
from step3_trt.onnx.builder import GraphBuilder
from step3_trt.onnx.dtypes import OnnxExportError, onnx_dtype
from step3_trt.onnx.plugin_nodes import emit_plugin

OPSET = 18  # ReduceMean/ReduceSum take axes as an input; TensorRT 10 parses it
IR_VERSION = 9
PLUGIN_DOMAIN_VERSION = 1  # per-op versions travel in each node's `plugin_version` attribute
UPDATES_KEY = "step3.updates"  # metadata_props entry: JSON {output: input it updates}


@dataclass(frozen=True)
class ExportedOnnx:
    model: onnx.ModelProto
    updates: dict[str, str]  # graph output -> the graph input it is the updated value of


@dataclass
class Translator:
    graph_name: str
    dim_names: dict[sympy.Symbol, str]
    g: GraphBuilder = field(default_factory=GraphBuilder)
    env: dict[fx.Node, object] = field(default_factory=dict)
    value_info: dict[str, torch.Tensor] = field(default_factory=dict)
    updated: dict[str, str] = field(default_factory=dict)  # graph input -> its latest value

    # ---- used by the emitters ------------------------------------------------------------
    def value(self, x) -> str:
        if not isinstance(x, fx.Node):
            raise OnnxExportError(f"{self.graph_name}: expected a tensor, got {x!r}")
        return self.env[x]

    def rebind(self, x: fx.Node, name: str) -> None:
        """`x` was updated in place: later reads of it see `name`."""
        self.env[x] = name
        if x.op == "placeholder":
            self.updated[x.name] = name

    def declare(self, name: str, val: torch.Tensor) -> None:
        self.value_info[name] = val

    def shape_tensor(self, dims, orig, base: str) -> str:
        """A shape list of ints and symbolic sizes ([1] int64 values) as one int64 tensor."""
        pieces, run = [], []
        for d, o in zip(dims, orig):
            if isinstance(o, fx.Node):
                if run:
                    pieces.append(self.g.ints(run, f"{base}.dims"))
                    run = []
                pieces.append(d)
            else:
                run.append(int(d))
        if run:
            pieces.append(self.g.ints(run, f"{base}.dims"))
        return pieces[0] if len(pieces) == 1 else self.g.op("Concat", pieces, f"{base}.shape",
                                                            axis=0)

    def dim(self, d) -> int | str:
        if isinstance(d, int):
            return d
        expr = d.node.expr
        if expr in self.dim_names:
            return self.dim_names[expr]
        return str(expr.xreplace({s: sympy.Symbol(n) for s, n in self.dim_names.items()}))

    def tensor_info(self, name: str, val: torch.Tensor, doc: str = "") -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, onnx_dtype(val.dtype),
                                             [self.dim(d) for d in val.shape], doc_string=doc)

    # ---- the walk ------------------------------------------------------------------------
    def run(self, program: torch.export.ExportedProgram, outputs: tuple[str, ...],
            docs: dict[str, str]) -> ExportedOnnx:
        if any(s.kind != torch.export.graph_signature.InputKind.USER_INPUT
               for s in program.graph_signature.input_specs):
            raise OnnxExportError(f"{self.graph_name}: graph has parameters or buffers; role "
                                  f"graphs take every weight as an input")
        self.g.used.update(outputs)
        inputs, results = [], None
        for node in program.graph.nodes:
            if node.op == "placeholder":
                self.g.used.add(node.name)
                self.env[node] = node.name
                doc = docs.get(node.name, "")
                inputs.append(self.tensor_info(node.name, node.meta["val"], doc))
            elif node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "output":
                results = node.args[0]
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        if len(results) != len(outputs):
            raise OnnxExportError(f"{self.graph_name}: graph returns {len(results)} values, its "
                                  f"signature names {len(outputs)}")
        outs = [self._output(name, self.value(r), r.meta["val"])
                for name, r in zip(outputs, results)]
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        updates = {}
        for inp, latest in self.updated.items():
            updates[latest] = inp
            outs.append(self.tensor_info(latest, placeholders[inp].meta["val"]))
        return ExportedOnnx(self._model(inputs, outs, updates), updates)

    def _call(self, node: fx.Node):
        target = node.target
        if isinstance(target, torch._ops.OpOverload) and target.namespace == DOMAIN:
            spec = SPECS.get(target._opname)
            if spec is None:
                raise OnnxExportError(f"{self.graph_name}: plugin op {target} has no ONNX "
                                      f"description in plugins/onnx/ops.py")
            return emit_plugin(self, node, spec)
        if target not in EMITTERS:
            raise OnnxExportError(f"{self.graph_name}: no ONNX translation for {target} (node "
                                  f"{node.name}); add one to step3_trt/onnx/aten_ops.py")
        args = fx.node.map_arg(node.args, lambda n: self.env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.env[n])
        return EMITTERS[target](self, node, list(args), dict(kwargs))

    def _output(self, name: str, value: str, val: torch.Tensor) -> onnx.ValueInfoProto:
        """Name the graph output `name`: rename the value's producer, or copy a graph input."""
        producers = [n for n in self.g.nodes if value in n.output]
        if producers:
            if value in self.value_info:
                self.value_info[name] = self.value_info.pop(value)
            for n in self.g.nodes:
                n.output[:] = [name if o == value else o for o in n.output]
                n.input[:] = [name if i == value else i for i in n.input]
        else:
            self.g.node("Identity", [value], name)
        return self.tensor_info(name, val)

    def _model(self, inputs, outputs, updates: dict[str, str]) -> onnx.ModelProto:
        infos = [self.tensor_info(n, v) for n, v in self.value_info.items()
                 if n not in {o.name for o in outputs}]
        graph = helper.make_graph(self.g.nodes, self.graph_name, inputs, outputs,
                                  initializer=self.g.initializers, value_info=infos)
        opsets = [helper.make_opsetid("", OPSET),
                  helper.make_opsetid(DOMAIN, PLUGIN_DOMAIN_VERSION)]
        model = helper.make_model(graph, producer_name="step3-trt", ir_version=IR_VERSION,
                                  opset_imports=opsets)
        helper.set_model_props(model, {UPDATES_KEY: json.dumps(updates)})
        return model


def to_onnx(program: torch.export.ExportedProgram, graph_name: str,
            dynamic: list[dict[int, str] | None], outputs: tuple[str, ...],
            docs: dict[str, str]) -> ExportedOnnx:
    """Translate `program`. `dynamic[i]` names the dynamic axes of user input i ({axis: name})."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    dim_names = {}
    for node, axes in zip(placeholders, dynamic):
        for axis, name in (axes or {}).items():
            size = node.meta["val"].shape[axis]
            if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                dim_names.setdefault(size.node.expr, name)
    return Translator(graph_name, dim_names).run(program, outputs, docs)
