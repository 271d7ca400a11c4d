"""`weights.onnx`: an ONNX index of one rank's weights, stored as external data.

The graphs take weights as inputs (one graph serves every layer; see docs/onnx.md), so the
weights live beside them: this model has no nodes, only initializers (every tensor the rank's
engine.json templates name, RoPE tables included), each pointing at its bytes inside the rank's
safetensors files (location, offset, length). Nothing is copied, and ONNX tooling
(`onnx.load(..., load_external_data=True)`, `numpy_helper.to_array`) reads every tensor.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from step3_trt.checkpoint.reader import TensorStore
from step3_trt.onnx.dtypes import onnx_dtype, torch_dtype
from step3_trt.onnx.translate import IR_VERSION, OPSET

WEIGHTS_FILE = "weights.onnx"


def write_weight_index(rank_dir: Path, weight_dirs: list[str]) -> Path:
    tensors = []
    for sub in weight_dirs:
        for name, entry in sorted(TensorStore(rank_dir / sub).entries.items()):
            t = TensorProto(name=name, data_type=onnx_dtype(entry.torch_dtype), dims=entry.shape)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", entry.file.relative_to(rank_dir).as_posix()),
                               ("offset", str(entry.offset)), ("length", str(entry.nbytes))):
                t.external_data.add(key=key, value=value)
            tensors.append(t)
    graph = helper.make_graph([], "weights", [], [], initializer=tensors,
                              doc_string="the rank's weights (external data in its safetensors)")
    model = helper.make_model(graph, producer_name="step3-trt", ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    path = rank_dir / WEIGHTS_FILE
    onnx.save_model(model, path)
    return path


def load_weight_index(rank_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of `weights.onnx`, read through ONNX's external-data loader."""
    model = onnx.load_model(rank_dir / WEIGHTS_FILE, load_external_data=True)
    out = {}
    for t in model.graph.initializer:
        dtype = torch_dtype(t.data_type)
        if dtype in (torch.bfloat16, torch.float8_e4m3fn):  # numpy has no such dtype: raw bytes
            raw = torch.frombuffer(bytearray(t.raw_data), dtype=torch.uint8)
            out[t.name] = raw.view(dtype).reshape(tuple(t.dims))
        else:
            out[t.name] = torch.from_numpy(numpy_helper.to_array(t).copy())
    return out
