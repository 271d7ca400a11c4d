"""ONNX translations of the ATen ops the role graphs use (torch.export's ATen IR, not decomposed).

Each emitter gets the translator, the FX node and its arguments with FX nodes replaced by ONNX
value names; it returns the node's ONNX value: a name, a list of names (tuple outputs, read by
`getitem`), or None (no value). Ops outside this table are refused, naming the op.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import fx

from step3_trt.onnx.dtypes import OnnxExportError, onnx_dtype

aten = torch.ops.aten


def meta(x) -> torch.Tensor:
    return x.meta["val"]


def _rank(node: fx.Node, i: int = 0) -> int:
    return meta(node.args[i]).dim()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _operand(t, name, orig, dtype: torch.dtype, base: str) -> str:
    """A binary op's operand as an ONNX value of `dtype` (the node's result dtype)."""
    if not isinstance(orig, fx.Node):
        return t.g.const(orig, dtype, f"{base}.c")
    if meta(orig).dtype != dtype:
        return t.g.op("Cast", [name], f"{base}.cast", to=onnx_dtype(dtype))
    return name


def _binary(op_type: str):
    def emit(t, node, a, kw):
        if kw.get("alpha", 1) != 1 or (len(a) > 2 and a[2] != 1):
            raise OnnxExportError(f"{node.target}: alpha != 1 is not translated")
        dtype = meta(node).dtype
        ins = [_operand(t, v, o, dtype, node.name) for v, o in zip(a[:2], node.args[:2])]
        return t.g.op(op_type, ins, node.name)
    return emit


def _unary(op_type: str):
    return lambda t, node, a, kw: t.g.op(op_type, [a[0]], node.name)


def _pow(t, node, a, kw):
    exponent = t.g.const(a[1], meta(node).dtype, f"{node.name}.exp")
    return t.g.op("Pow", [a[0], exponent], node.name)


def _reduce(op_type: str):
    def emit(t, node, a, kw):
        if kw.get("dtype") is not None:
            raise OnnxExportError(f"{node.target}: dtype= is not translated")
        rank = _rank(node)
        axes = [_axis(d, rank) for d in a[1]]
        keep = a[2] if len(a) > 2 else kw.get("keepdim", False)
        return t.g.op(op_type, [a[0], t.g.ints(axes, f"{node.name}.axes")], node.name,
                      keepdims=int(keep))
    return emit


def _rsqrt(t, node, a, kw):
    return t.g.op("Reciprocal", [t.g.op("Sqrt", [a[0]], f"{node.name}.sqrt")], node.name)


def _silu(t, node, a, kw):
    return t.g.op("Mul", [a[0], t.g.op("Sigmoid", [a[0]], f"{node.name}.sigmoid")], node.name)


def _cast(t, node, a, kw):
    return t.g.op("Cast", [a[0]], node.name, to=onnx_dtype(meta(node).dtype))


def _linear(t, node, a, kw):
    bias = a[2] if len(a) > 2 else kw.get("bias")
    if _rank(node) == 2:
        return t.g.op("Gemm", [a[0], a[1]] + ([bias] if bias else []), node.name, transB=1)
    wt = t.g.op("Transpose", [a[1]], f"{node.name}.wt", perm=[1, 0])
    out = t.g.op("MatMul", [a[0], wt], node.name if bias is None else f"{node.name}.mm")
    return out if bias is None else t.g.op("Add", [out, bias], node.name)


def _reshape(t, node, a, kw):
    return t.g.op("Reshape", [a[0], t.shape_tensor(a[1], node.args[1], node.name)], node.name)


def _index(t, node, a, kw):
    indices = a[1]
    if len(indices) != 1 or indices[0] is None:
        raise OnnxExportError(f"{node.name}: only x[idx] on the first dimension is translated")
    return t.g.op("Gather", [a[0], indices[0]], node.name, axis=0)


def _unsqueeze(t, node, a, kw):
    axis = _axis(a[1], _rank(node) + 1)
    return t.g.op("Unsqueeze", [a[0], t.g.ints([axis], f"{node.name}.axes")], node.name)


def _chunk(t, node, a, kw):
    chunks = a[1]
    dim = a[2] if len(a) > 2 else kw.get("dim", 0)
    size = meta(node.args[0]).shape[dim]
    if not isinstance(size, int) or size % chunks:
        raise OnnxExportError(f"{node.name}: chunk needs a static dimension divisible by {chunks}")
    sizes = t.g.ints([size // chunks] * chunks, f"{node.name}.sizes")
    return t.g.node("Split", [a[0], sizes], [f"{node.name}_{i}" for i in range(chunks)],
                    axis=_axis(dim, _rank(node)))


def _cat(t, node, a, kw):
    dim = a[1] if len(a) > 1 else kw.get("dim", 0)
    return t.g.op("Concat", list(a[0]), node.name, axis=_axis(dim, meta(node).dim()))


def _softmax(t, node, a, kw):
    if len(a) > 2 and a[2]:
        raise OnnxExportError(f"{node.name}: softmax with half_to_float is not translated")
    return t.g.op("Softmax", [a[0]], node.name, axis=_axis(a[1], _rank(node)))


def _topk(t, node, a, kw):
    k, dim = a[1], (a[2] if len(a) > 2 else kw.get("dim", -1))
    largest = a[3] if len(a) > 3 else kw.get("largest", True)
    ordered = a[4] if len(a) > 4 else kw.get("sorted", True)
    values, idx = t.g.node("TopK", [a[0], t.g.ints([k], f"{node.name}.k")],
                           [f"{node.name}_values", f"{node.name}_indices"],
                           axis=_axis(dim, _rank(node)), largest=int(largest), sorted=int(ordered))
    return [values, idx]


def _embedding(t, node, a, kw):
    return t.g.op("Gather", [a[0], a[1]], node.name, axis=0)


def _sym_size(t, node, a, kw):
    """A symbolic size as a [1] int64 tensor (what shape lists are concatenated from)."""
    dim = _axis(a[1], _rank(node))
    return t.g.op("Shape", [a[0]], node.name, start=dim, end=dim + 1)


EMITTERS: dict[object, Callable] = {
    aten.add.Tensor: _binary("Add"), aten.sub.Tensor: _binary("Sub"),
    aten.mul.Tensor: _binary("Mul"), aten.div.Tensor: _binary("Div"),
    aten.neg.default: _unary("Neg"), aten.clone.default: _unary("Identity"),
    aten.pow.Tensor_Scalar: _pow, aten.rsqrt.default: _rsqrt, aten.silu.default: _silu,
    aten.mean.dim: _reduce("ReduceMean"), aten.sum.dim_IntList: _reduce("ReduceSum"),
    aten.to.dtype: _cast, aten.linear.default: _linear,
    aten.view.default: _reshape, aten.reshape.default: _reshape,
    aten.index.Tensor: _index, aten.unsqueeze.default: _unsqueeze, aten.chunk.default: _chunk,
    aten.cat.default: _cat, aten.softmax.int: _softmax, aten.topk.default: _topk,
    aten.embedding.default: _embedding, aten.sym_size.int: _sym_size,
    aten._assert_tensor_metadata.default: lambda t, node, a, kw: None,
    operator.getitem: lambda t, node, a, kw: a[0][a[1]],
}
