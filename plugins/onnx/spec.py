"""Typed description of one plugin op as an ONNX node / TensorRT plugin.

The same facts serve three readers: the ONNX exporter (which torch argument becomes which node
input or attribute), the ONNX Runtime reference kernels (input and output dtypes), and a
TensorRT plugin author (plugin name, version, namespace, fields, shapes, aliasing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DOMAIN = "step3"  # ONNX domain of every plugin node, and the TensorRT plugin namespace
# ONNX FLOAT / INT / STRING attributes; TensorRT's parser passes them as kFLOAT32 / kINT32 / kCHAR
ATTR_TYPES = ("float", "int", "string")


@dataclass(frozen=True)
class TensorSpec:
    name: str  # the torch argument name (inputs) or the output name
    dtypes: tuple[str, ...]  # torch dtype names the op accepts / produces
    shape: tuple[str, ...]  # symbols (see plugins/README.md notation); "*" = any leading dims
    optional: bool = False  # an optional input: empty name in the ONNX node when absent
    doc: str = ""


@dataclass(frozen=True)
class AttrSpec:
    name: str
    type: str  # one of ATTR_TYPES
    doc: str = ""

    def __post_init__(self):
        if self.type not in ATTR_TYPES:
            raise ValueError(f"attribute {self.name}: type {self.type!r} not in {ATTR_TYPES}")


@dataclass(frozen=True)
class PluginSpec:
    torch_op: str  # name in the torch.ops.step3 namespace
    op_type: str  # ONNX node op_type = TensorRT plugin name
    version: int  # plugins.OP_VERSIONS[torch_op]; also the node's `plugin_version` attribute
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...] = ()
    # output name -> input name: the output is the input updated in place (the torch op mutates
    # it); a TensorRT plugin aliases the two (IPluginV3OneBuildV2::getAliasedInput)
    updates: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    output_dtype_rule: str = ""  # how each output dtype follows from the inputs
    shape_rule: str = ""  # how each output shape follows from the inputs (getOutputShapes)

    def __post_init__(self):
        names = {t.name for t in self.inputs}
        for out, inp in self.updates.items():
            if out not in {t.name for t in self.outputs} or inp not in names:
                raise ValueError(f"{self.op_type}: update {out} -> {inp} names no output/input")

    @property
    def domain(self) -> str:
        return DOMAIN

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def attribute(self, name: str) -> AttrSpec:
        return next(a for a in self.attributes if a.name == name)

    def node_attributes(self) -> dict[str, str]:
        """The attributes every node of this op carries for TensorRT's ONNX parser, which looks
        the plugin up by op_type, `plugin_version` and `plugin_namespace`."""
        return {"plugin_version": str(self.version), "plugin_namespace": DOMAIN}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["domain"] = DOMAIN
        d["node_attributes"] = self.node_attributes()
        return d
