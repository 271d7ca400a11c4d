"""torch dtype <-> ONNX element type."""

from __future__ import annotations

import torch
from onnx import TensorProto

_TO_ONNX = {
    torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16,
    torch.bfloat16: TensorProto.BFLOAT16, torch.float64: TensorProto.DOUBLE,
    torch.int64: TensorProto.INT64, torch.int32: TensorProto.INT32, torch.int16: TensorProto.INT16,
    torch.int8: TensorProto.INT8, torch.uint8: TensorProto.UINT8, torch.bool: TensorProto.BOOL,
    torch.float8_e4m3fn: TensorProto.FLOAT8E4M3FN,
}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}


class OnnxExportError(ValueError):
    """A graph or tensor the ONNX exporter cannot express; the message names it."""


def onnx_dtype(dtype: torch.dtype) -> int:
    if dtype not in _TO_ONNX:
        raise OnnxExportError(f"dtype {dtype} has no ONNX element type here")
    return _TO_ONNX[dtype]


def torch_dtype(elem_type: int) -> torch.dtype:
    if elem_type not in _FROM_ONNX:
        raise OnnxExportError(f"ONNX element type {TensorProto.DataType.Name(elem_type)} has no "
                              f"torch dtype here")
    return _FROM_ONNX[elem_type]
