"""ONNX / TensorRT descriptions of the `step3::*` plugin ops (one `PluginSpec` per op).

Each op becomes one ONNX node of domain `step3` whose op_type is the TensorRT plugin name, with
the op's non-tensor arguments as typed attributes and `plugin_version` / `plugin_namespace`
attributes for TensorRT's ONNX parser. `manifest()` is the JSON form written next to ONNX
engines. Like the rest of `plugins`, this never imports `step3_trt`.
"""

from __future__ import annotations

from plugins.onnx.ops import SPECS
from plugins.onnx.spec import ATTR_TYPES, DOMAIN, AttrSpec, PluginSpec, TensorSpec

MANIFEST_FORMAT = "step3-trt/plugin-manifest"
MANIFEST_VERSION = 1


def manifest(ops: list[str] | None = None) -> dict:
    """The plugin manifest: every op in `ops` (default: all), described by its spec."""
    names = sorted(SPECS) if ops is None else sorted(set(ops))
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise KeyError(f"no ONNX description for plugin op step3::{unknown[0]}")
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "domain": DOMAIN,
            "ops": [SPECS[n].to_dict() for n in names]}


__all__ = ["ATTR_TYPES", "DOMAIN", "MANIFEST_FORMAT", "MANIFEST_VERSION", "SPECS", "AttrSpec",
           "PluginSpec", "TensorSpec", "manifest"]
