"""A small ONNX graph builder: nodes, constant initializers and unique value names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from step3_trt.onnx.dtypes import onnx_dtype


@dataclass
class GraphBuilder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def fresh(self, base: str) -> str:
        """`base` if unused, else `base_1`, `base_2`, ..."""
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str] | str, *,
             domain: str = "", **attrs) -> list[str]:
        outs = [outputs] if isinstance(outputs, str) else outputs
        outs = [self.fresh(o) for o in outs]
        name = self.fresh(f"{outs[0]}.node")
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain,
                                           **attrs))
        return outs

    def op(self, op_type: str, inputs: list[str], out: str, **attrs) -> str:
        return self.node(op_type, inputs, out, **attrs)[0]

    def const(self, value, dtype: torch.dtype, base: str = "const") -> str:
        """A constant initializer (scalar or list) of torch `dtype`."""
        array = torch.tensor(value, dtype=dtype)
        name = self.fresh(base)
        if dtype == torch.bfloat16:
            tensor = helper.make_tensor(name, onnx_dtype(dtype), list(array.shape),
                                        array.view(torch.int16).numpy().tobytes(), raw=True)
        else:
            tensor = numpy_helper.from_array(np.asarray(array.numpy()), name)
        self.initializers.append(tensor)
        return name

    def ints(self, values: list[int], base: str = "ints") -> str:
        """A 1-D int64 constant (axes, shapes, split sizes)."""
        return self.const(list(values), torch.int64, base)
