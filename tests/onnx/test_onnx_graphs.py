"""ONNX engines of the bundled model: checker, plugin nodes, weight index, plugin manifest."""

import json

import onnx
import pytest
import torch

import plugins
from plugins.onnx import DOMAIN, SPECS
from step3_trt.checkpoint.reader import TensorStore
from step3_trt.onnx.trtexec import commands
from step3_trt.onnx.weights import WEIGHTS_FILE, load_weight_index

RANKS = ("attention/rank0", "attention/rank1", "ffn/rank0", "ffn/rank1")


def engine_json(bundled, rank):
    return json.loads((bundled.onnx / rank / "engine.json").read_text())


def plugin_nodes(path):
    return [n for n in onnx.load_model(path).graph.node if n.domain == DOMAIN]


@pytest.mark.parametrize("rank", RANKS)
def test_every_graph_and_the_weight_index_pass_the_full_checker(bundled, rank):
    meta = engine_json(bundled, rank)
    assert meta["backend"] == "onnx" and meta["graphs"]
    for entry in meta["graphs"].values():
        onnx.checker.check_model(str(bundled.onnx / rank / entry["file"]), full_check=True)
    onnx.checker.check_model(str(bundled.onnx / rank / WEIGHTS_FILE), full_check=True)


def test_attention_graph_has_one_node_per_plugin_call_with_typed_attributes(bundled):
    rank = bundled.onnx / "attention/rank0"
    nodes = plugin_nodes(rank / "graphs/attn_prefill.onnx")
    assert [n.op_type for n in nodes] == ["KvAppend", "MfaPrefill"]
    append, attend = nodes
    attrs = {a.name: a for a in attend.attribute}
    head_dim = engine_json(bundled, "attention/rank0")["architecture"]["head_dim"]
    assert attrs["sm_scale"].type == onnx.AttributeProto.FLOAT
    assert attrs["sm_scale"].f == pytest.approx(head_dim ** -0.5)
    for n in nodes:
        kv = {a.name: a.s.decode() for a in n.attribute if a.type == onnx.AttributeProto.STRING}
        assert kv["plugin_namespace"] == DOMAIN
        op = next(s for s in SPECS.values() if s.op_type == n.op_type).torch_op
        assert kv["plugin_version"] == str(plugins.OP_VERSIONS[op])
    # the attention reads the caches kv_append wrote, and the graph returns them
    assert list(attend.input[1:3]) == list(append.output)
    model = onnx.load_model(rank / "graphs/attn_prefill.onnx")
    assert [o.name for o in model.graph.output] == ["h", "y", "k_cache_out", "v_cache_out"]
    assert engine_json(bundled, "attention/rank0")["graphs"]["attn_prefill"]["updates"] == {
        "k_cache_out": "k_cache", "v_cache_out": "v_cache"}


def test_moe_graph_has_one_experts_node_with_an_int_attribute(bundled):
    nodes = plugin_nodes(bundled.onnx / "ffn/rank1/graphs/ffn_moe.onnx")
    assert [n.op_type for n in nodes] == ["MoeExperts"]
    offset = next(a for a in nodes[0].attribute if a.name == "expert_offset")
    assert offset.type == onnx.AttributeProto.INT  # the graph subtracts the rank's offset itself
    assert plugin_nodes(bundled.onnx / "ffn/rank1/graphs/ffn_dense.onnx") == []


def test_weight_inputs_name_their_checkpoint_tensors(bundled):
    model = onnx.load_model(bundled.onnx / "attention/rank0/graphs/attn_prefill.onnx")
    docs = {i.name: i.doc_string for i in model.graph.input}
    assert docs["w_q"] == "model.layers.{layer}.self_attn.q_proj.weight"
    assert docs["rope_cos"] == "rope.cos" and docs["x"] == ""


@pytest.mark.parametrize("rank", ["attention/rank0", "ffn/rank1"])
def test_weight_index_reads_the_safetensors_bytes(bundled, rank):
    rank_dir = bundled.onnx / rank
    via_onnx = load_weight_index(rank_dir)
    dirs = engine_json(bundled, rank)["weight_dirs"]
    stores = [TensorStore(rank_dir / d) for d in dirs]
    names = {n for s in stores for n in s.entries}
    assert set(via_onnx) == names
    for store in stores:
        for name in store.entries:
            assert torch.equal(via_onnx[name], store.get(name)), name


def test_plugin_manifest_lists_the_ops_the_graphs_use(bundled):
    manifest = json.loads((bundled.onnx / "plugins.json").read_text())
    ops = {op["torch_op"]: op for op in manifest["ops"]}
    assert set(ops) == {"kv_append", "mfa_prefill", "moe_experts"}
    assert manifest["graphs"] == {"kv_append": ["attn_prefill"], "mfa_prefill": ["attn_prefill"],
                                  "moe_experts": ["ffn_moe"]}
    for name, op in ops.items():
        assert op["version"] == plugins.OP_VERSIONS[name] and op["domain"] == DOMAIN
        assert op["node_attributes"] == {"plugin_version": str(op["version"]),
                                         "plugin_namespace": DOMAIN}
    assert [(a["name"], a["type"]) for a in ops["mfa_prefill"]["attributes"]] == [
        ("sm_scale", "float")]
    assert ops["kv_append"]["updates"] == {"k_cache_out": "k_cache", "v_cache_out": "v_cache"}
    assert [i["name"] for i in ops["moe_experts"]["inputs"] if i["optional"]] == [
        "w_gate_scale", "w_up_scale", "w_down_scale"]


def test_trtexec_commands_give_every_dynamic_input_its_range(bundled):
    cmds = commands(bundled.onnx, "libstep3_plugins.so")
    graphs = sum(len(engine_json(bundled, r)["graphs"]) for r in RANKS)
    assert len(cmds) == graphs
    attn = next(c for c in cmds if "attention/rank0/graphs/attn_prefill.onnx" in c)
    flags = dict(part.removeprefix("--").split("=", 1) for part in attn.split()[1:] if "=" in part)
    low, high = (dict(s.split(":") for s in flags[k].split(","))
                 for k in ("minShapes", "maxShapes"))
    build = bundled.build
    assert set(low) == {"x", "positions", "k_cache", "v_cache", "slot_mapping", "block_tables",
                        "seq_lens", "cu_seqlens_q"}
    assert high["x"] == f"{build.runtime.max_tokens_per_step}x256" and low["x"] == "1x256"
    assert high["seq_lens"] == str(build.runtime.max_batch)
    assert high["cu_seqlens_q"] == str(build.runtime.max_batch + 1)
    blocks = build.kv_cache.max_tokens // build.kv_cache.block_size
    assert low["k_cache"] == high["k_cache"] == f"{blocks}x{build.kv_cache.block_size}x64"
    assert flags["staticPlugins"] == "libstep3_plugins.so" and "--stronglyTyped" in attn
