"""One ONNX engine graph under ONNX Runtime (CPU), called like a compiled inductor graph:
torch tensors in (runtime inputs, then weights), torch tensors out. Inputs the graph updates
(the KV caches: outputs `<input>_out`) are written back into the tensors passed in, so callers
see the in-place semantics of the inductor engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from plugins.onnx import DOMAIN, SPECS
from step3_trt.manifest import ArtifactError
from step3_trt.onnx import ort_ops
from step3_trt.onnx.dtypes import torch_dtype

_BY_OP_TYPE = {s.op_type: s.torch_op for s in SPECS.values()}


def check_reference_kernels(model: onnx.ModelProto, where: str) -> None:
    """Every plugin node must match a registered ONNX Runtime kernel's dtypes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        op = _BY_OP_TYPE.get(node.op_type)
        if op not in ort_ops.SIGNATURES:
            raise ArtifactError(f"{where}: no ONNX Runtime kernel for plugin node "
                                f"{DOMAIN}::{node.op_type} (reference kernels: "
                                f"{', '.join(sorted(ort_ops.SIGNATURES))})")
        want = ort_ops.SIGNATURES[op][0]
        unknown = [i for i in node.input if i and i not in types]
        if unknown:
            raise ArtifactError(f"{where}: the dtype of {unknown[0]} (input of "
                                f"{DOMAIN}::{node.op_type}) is not known to shape inference")
        have = tuple(str(torch_dtype(types[i])).removeprefix("torch.") for i in node.input if i)
        if have != want:
            raise ArtifactError(f"{where}: {DOMAIN}::{node.op_type} gets {', '.join(have)}; the "
                                f"ONNX Runtime reference kernel takes {', '.join(want)} (float32 "
                                f"engines)")


class OnnxGraph:
    def __init__(self, path: str | Path, outputs: list[str], updates: dict[str, str]):
        path = Path(path)
        model = onnx.load_model(path)
        check_reference_kernels(model, str(path))
        options = ort.SessionOptions()
        options.register_custom_ops_library(ort_ops.library_path())
        options.log_severity_level = 3  # warnings about unused inputs (attn_decode's cu_seqlens_q)
        # one thread: the graphs are small, and ONNX Runtime's spinning pool fights the torch
        # threads of the reference kernels for the cores (about 3x slower on 2 busy cores)
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in model.graph.input]
        self.fed = {i.name for i in self.session.get_inputs()}
        self.outputs, self.updates = list(outputs), dict(updates)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.inputs):
            raise ValueError(f"{self.path.name}: {len(tensors)} inputs given, the graph has "
                             f"{len(self.inputs)}")
        feed = {name: _numpy(name, t) for name, t in zip(self.inputs, tensors) if name in self.fed}
        results = dict(zip(self.output_names, self.session.run(None, feed)))
        by_input = dict(zip(self.inputs, tensors))
        for out, inp in self.updates.items():
            by_input[inp].copy_(torch.from_numpy(results[out]))
        return tuple(torch.from_numpy(results[o]) for o in self.outputs)


def _numpy(name: str, t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16 or t.device.type != "cpu":
        raise ValueError(f"input {name}: ONNX Runtime here takes CPU tensors of numpy dtypes, "
                         f"got {t.dtype} on {t.device}")
    return t.detach().contiguous().numpy()


def load_graph(path: Path, entry: dict, device: torch.device) -> OnnxGraph:
    """An engine.json graph entry of an ONNX engine, ready to call (CPU only)."""
    if device.type != "cpu":
        raise ArtifactError(f"{path}: ONNX engines run under ONNX Runtime on the CPU here, not "
                            f"on {device}")
    return OnnxGraph(path, entry["outputs"], entry.get("updates", {}))
