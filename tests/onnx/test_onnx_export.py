"""The exporter's contracts: plugin descriptions agree with the torch ops, refusals name what
they refuse, the ONNX backend builds from a build config and reuses an unchanged build."""

import json

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import plugins
from plugins.onnx import DOMAIN, SPECS
from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.convert.convert import convert
from step3_trt.engine.build import build_engines
from step3_trt.engine.export import graph_module, runtime_examples
from step3_trt.engine.signatures import SIGNATURES
from step3_trt.manifest import ArtifactError
from step3_trt.onnx.build import build_onnx_engines
from step3_trt.onnx.dtypes import OnnxExportError
from step3_trt.onnx.export import export_graph
from step3_trt.onnx.session import check_reference_kernels, load_graph
from step3_trt.onnx.translate import to_onnx
from tests.conftest import REPO, make_engines


@pytest.mark.parametrize("op", sorted(SPECS))
def test_each_description_matches_its_torch_op(op):
    spec, schema = SPECS[op], getattr(torch.ops.step3, op).default._schema
    args = [a.name for a in schema.arguments]
    inputs = [t.name for t in spec.inputs]
    assert [a for a in args if a in inputs] == inputs  # node inputs in schema order
    assert sorted(inputs + [a.name for a in spec.attributes]) == sorted(args)
    optional = {a.name for a in schema.arguments if a.type.kind() == "OptionalType"}
    assert {t.name for t in spec.inputs if t.optional} == optional & set(inputs)
    assert len(spec.outputs) - len(spec.updates) == len(schema.returns)
    assert spec.version == plugins.OP_VERSIONS[op]
    # TensorRT's ONNX parser ignores the domain: a plugin name must not be a standard op's
    assert not onnx.defs.has(spec.op_type)


def export(module, *args):
    program = torch.export.export(module, args)
    return to_onnx(program, "probe", [None] * len(args), ("out",), {})


def test_an_op_without_translation_is_refused_by_name():
    class Cumsum(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(0)

    with pytest.raises(OnnxExportError, match=r"no ONNX translation for aten\.cumsum"):
        export(Cumsum(), torch.randn(4, 3))


def test_a_plugin_attribute_left_at_none_is_refused():
    class Decode(torch.nn.Module):
        def forward(self, q, k, v, bt, sl):
            return torch.ops.step3.mfa_decode(q, k, v, bt, sl)

    args = (torch.randn(2, 2, 8), torch.randn(3, 4, 8), torch.randn(3, 4, 8),
            torch.zeros(2, 1, dtype=torch.int32), torch.ones(2, dtype=torch.int32))
    with pytest.raises(OnnxExportError, match="attribute sm_scale must be given explicitly"):
        export(Decode(), *args)


def test_a_plugin_call_becomes_one_node_with_typed_attributes():
    class Decode(torch.nn.Module):
        def forward(self, q, k, v, bt, sl):
            return torch.ops.step3.mfa_decode(q, k, v, bt, sl, sm_scale=0.125)

    args = (torch.randn(2, 2, 8), torch.randn(3, 4, 8), torch.randn(3, 4, 8),
            torch.zeros(2, 1, dtype=torch.int32), torch.ones(2, dtype=torch.int32))
    model = export(Decode(), *args).model
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.domain, node.op_type, list(node.input)) == (DOMAIN, "MfaDecode",
                                                              ["q", "k", "v", "bt", "sl"])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"sm_scale": pytest.approx(0.125), "plugin_namespace": b"step3",
                     "plugin_version": str(plugins.OP_VERSIONS["mfa_decode"]).encode()}


def test_reference_kernels_refuse_other_dtypes_by_name():
    f, i32 = TensorProto.FLOAT, TensorProto.INT32
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in (
        ("k", f, [2, 8]), ("v", f, [2, 8]), ("kc", f, [3, 4, 8]), ("vc", f, [3, 4, 8]),
        ("slots", i32, [2]))]
    node = helper.make_node("KvAppend", ["k", "v", "kc", "vc", "slots"], ["kc2", "vc2"],
                            domain=DOMAIN)
    outs = [helper.make_tensor_value_info(n, f, [3, 4, 8]) for n in ("kc2", "vc2")]
    model = helper.make_model(helper.make_graph([node], "g", ins, outs),
                              opset_imports=[helper.make_opsetid("", 18),
                                             helper.make_opsetid(DOMAIN, 1)])
    with pytest.raises(ArtifactError, match=r"step3::KvAppend gets .*int32; the ONNX Runtime "
                                            r"reference kernel takes .*int64"):
        check_reference_kernels(model, "probe")


def test_onnx_engines_refuse_a_cuda_device(tmp_path):
    with pytest.raises(ArtifactError, match="run under ONNX Runtime on the CPU"):
        load_graph(tmp_path / "g.onnx", {"outputs": ["x"]}, torch.device("cuda"))


def test_backend_onnx_in_the_build_config_builds_and_reuses(tiny_checkpoint, tmp_path,
                                                             graph_cache):
    roles, engines = make_engines(tiny_checkpoint, "tiny-cpu-onnx.yaml", tmp_path, graph_cache)
    manifest = json.loads((engines / "manifest.json").read_text())
    assert manifest["backend"] == "onnx" and manifest["plugin_manifest"] == "plugins.json"
    for rank in manifest["ranks"]:
        meta = json.loads((engines / rank / "engine.json").read_text())
        assert all(e["file"].endswith(".onnx") for e in meta["graphs"].values())
    build = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-onnx.yaml")
    before = (engines / "manifest.json").stat().st_mtime_ns
    _, reused = build_engines(roles, build, engines, cache_dir=graph_cache, progress=False)
    assert reused and (engines / "manifest.json").stat().st_mtime_ns == before


def test_decode_graph_under_onnx_runtime_matches_the_eager_graph(tmp_path):
    """attn_decode is built only for CUDA configs; its ONNX form runs on the CPU all the same.
    float32, same math in another summation order: 1e-5 (see test_onnx_runtime.py)."""
    arch = {"hidden_size": 32, "head_dim": 16, "num_attention_heads": 2, "moe_top_k": 2,
            "moe_num_experts": 4, "rms_norm_eps": 1e-5, "share_q_dim": 24}
    sig = SIGNATURES["attn_decode"]
    g = torch.Generator().manual_seed(3)
    H, D, Q = 32, 16, 24
    weights = [torch.randn(s, generator=g) for s in (
        (64, D), (64, D), (H,), (Q, H), (Q,), (2 * D, Q), (D, H), (D, H), (H, 2 * D), (H,))]
    hit, updates = export_graph(sig, arch, weights, torch.float32, torch.float32, 4,
                                plugins.OP_VERSIONS, tmp_path / "d.onnx", tmp_path / "cache")
    assert not hit and updates == {"k_cache_out": "k_cache", "v_cache_out": "v_cache"}
    runtime = [t.clone() for t, _ in runtime_examples(sig, arch, torch.float32, torch.float32, 4,
                                                      "cpu")]
    for i in (0, 2, 3):  # x and the caches, from this test's generator (not the global RNG)
        runtime[i].normal_(generator=g)
    eager_in = [t.clone() for t in runtime]
    with torch.no_grad():
        want = graph_module(sig, arch)(*eager_in, *weights)
    got = load_graph(tmp_path / "d.onnx", {"outputs": list(sig.outputs), "updates": updates},
                     torch.device("cpu"))(*runtime, *weights)
    for a, b in zip((*got, *runtime), (*want, *eager_in)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fp8_kv_cache_is_refused_by_the_onnx_backend(tiny_checkpoint, tmp_path):
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-onnx.yaml").to_dict()
    raw["dtypes"]["kv_cache"] = "fp8"
    build = BuildConfig.from_dict(raw)
    roles = convert(tiny_checkpoint, build, tmp_path / "roles", progress=False)
    with pytest.raises(BuildConfigError, match="FP8 weights or an FP8 KV cache"):
        build_onnx_engines(roles, build, tmp_path / "engines", progress=False)
