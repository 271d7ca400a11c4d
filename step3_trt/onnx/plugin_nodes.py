"""A `step3::*` op call -> one ONNX node of the `step3` domain, driven by its PluginSpec.

Tensor arguments become inputs in schema order (an absent optional one is an empty name;
trailing ones are dropped), the others typed attributes. An op that mutates an input (kv_append)
gets one output per mutated input, and later uses of that input read the output instead.
"""

from __future__ import annotations

from torch import fx

from plugins.onnx import DOMAIN, PluginSpec
from step3_trt.onnx.dtypes import OnnxExportError

_CAST = {"float": float, "int": int, "string": str}


def bind_arguments(node: fx.Node) -> dict[str, object]:
    """Every schema argument of an op call: given positionally, by keyword, or its default."""
    schema = node.target._schema
    values = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
        else:
            raise OnnxExportError(f"{node.name}: argument {arg.name} of {node.target} is missing")
    return values


def emit_plugin(t, node: fx.Node, spec: PluginSpec):
    op = f"step3::{spec.torch_op}"
    values = bind_arguments(node)
    tensors = {s.name for s in spec.inputs}
    attrs_spec = {a.name: a for a in spec.attributes}
    inputs: list[str] = []
    attrs = dict(spec.node_attributes())
    for name, value in values.items():
        if name in tensors:
            if value is None and not spec.input(name).optional:
                raise OnnxExportError(f"{node.name}: {op} input {name} is required")
            inputs.append("" if value is None else t.value(value))
        elif name in attrs_spec:
            if value is None:
                raise OnnxExportError(f"{node.name}: {op} attribute {name} must be given "
                                      f"explicitly for ONNX export (it is None)")
            attrs[name] = _CAST[attrs_spec[name].type](value)
        else:
            raise OnnxExportError(f"{op} argument {name} is not in its ONNX description "
                                  f"(plugins/onnx/ops.py is out of date)")
    while inputs and inputs[-1] == "":
        inputs.pop()
    bases = [f"{t.value(values[spec.updates[o.name]])}_out" if o.name in spec.updates
             else (node.name if len(spec.outputs) == 1 else f"{node.name}_{o.name}")
             for o in spec.outputs]
    outs = t.g.node(spec.op_type, inputs, bases, domain=DOMAIN, **attrs)
    for i, o in enumerate(spec.outputs):
        t.declare(outs[i], _output_meta(node, spec, i, values))
        if o.name in spec.updates:
            t.rebind(values[spec.updates[o.name]], outs[i])
    returns = node.target._schema.returns
    if not returns:
        return None
    return outs[0] if len(returns) == 1 else outs


def _output_meta(node: fx.Node, spec: PluginSpec, i: int, values: dict):
    """The fake tensor describing output i (an updated input looks like that input)."""
    name = spec.outputs[i].name
    if name in spec.updates:
        return values[spec.updates[name]].meta["val"]
    val = node.meta["val"]
    return val if len(spec.outputs) == 1 else val[i]
