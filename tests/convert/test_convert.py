import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.reader import CheckpointReader, TensorStore
from step3_trt.checkpoint.writer import StreamingShardWriter
from step3_trt.convert.convert import convert
from step3_trt.convert.memory_plan import memory_plan
from step3_trt.model.load import load_reference_model


def build_config(ep=1, tp=1, attention=1, **extra):
    return BuildConfig.from_dict({"name": f"t{attention}a{ep}x{tp}f",
                                  "mapping": {"attention": {"ranks": attention},
                                              "ffn": {"ep": ep, "tp": tp}},
                                  "memory": {"per_rank_gb": 1, "reserve_gb": 0.1}, **extra})


def swiglu(x, g, u, d):
    return F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)


def replica_partial(store: TensorStore, layer: int, y, is_moe):
    """A rank's slice of its replicated MLP (the shared expert, or the dense MLP), from its
    tensors."""
    p = f"model.layers.{layer}." + ("share_expert" if is_moe else "mlp")
    return swiglu(y, *(store.get(f"{p}.{n}.weight") for n in ("gate_proj", "up_proj",
                                                               "down_proj")))


def routed_partial(store: TensorStore, mapping: dict, layer: int, y, weights, ids):
    """A rank's routed-expert partial, written out directly from its tensors."""
    p = f"model.layers.{layer}."
    g, u, d = (store.get(p + f"moe.{n}.weight") for n in ("gate_proj", "up_proj", "down_proj"))
    out = torch.zeros_like(y)
    for local in range(mapping["num_local_experts"]):
        e = mapping["expert_offset"] + local
        w = (weights * (ids == e)).sum(-1, keepdim=True)  # 0 for tokens not routed to e
        out = out + w * swiglu(y, g[local], u[local], d[local])
    return out


@pytest.mark.parametrize("ep, tp, attention", [(1, 1, 1), (2, 1, 2), (3, 2, 1), (6, 1, 1),
                                               (4, 1, 1), (4, 2, 2)])
def test_rank_partials_sum_to_the_reference_ffn(tiny_checkpoint, tmp_path, ep, tp, attention):
    """Placement P2: the routed partials of all FFN ranks sum to the routed experts' output
    (the experts split into near-equal blocks, 6 experts over 4 EP groups too); each EP group's
    TP ranks hold a whole replica of the shared expert and the dense MLPs."""
    out = convert(tiny_checkpoint, build_config(ep, tp, attention), tmp_path / "roles",
                  progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    ffn_ranks = [r for r in manifest["ranks"] if r.startswith("ffn/")]
    assert len(ffn_ranks) == ep * tp
    assert len(manifest["ranks"]) == ep * tp + attention
    mappings = {r: json.loads((out / r / "config.json").read_text())["mapping"] for r in ffn_ranks}
    model = load_reference_model(CheckpointReader(tiny_checkpoint))
    cfg = model.config
    owned = sorted(e for m in mappings.values() if m["tp_rank"] == 0
                   for e in range(m["expert_offset"], m["expert_offset"] + m["num_local_experts"]))
    assert owned == list(range(cfg.moe_num_experts))  # every expert in exactly one EP group
    sizes = {m["num_local_experts"] for m in mappings.values()}
    assert max(sizes) - min(sizes) <= 1
    y = torch.randn(7, cfg.hidden_size)
    for layer, block in enumerate(model.model.layers):
        with torch.no_grad():
            if block.is_moe:
                weights, ids = block.moe.route(y)
                got = sum(routed_partial(TensorStore(out / r), mappings[r], layer, y, weights,
                                         ids) for r in ffn_ranks)
                # float32; only the summation order differs from the reference
                torch.testing.assert_close(got, block.moe(y), rtol=1e-5, atol=1e-5)
            replica = block.share_expert if block.is_moe else block.mlp
            for group in range(ep):
                ranks = [r for r in ffn_ranks if mappings[r]["ep_rank"] == group]
                got = sum(replica_partial(TensorStore(out / r), layer, y, block.is_moe)
                          for r in ranks)
                torch.testing.assert_close(got, replica(y), rtol=1e-5, atol=1e-5)
    reader = CheckpointReader(tiny_checkpoint)
    for a in range(attention):  # replicas carry the attention-side tensors unchanged
        store = TensorStore(out / f"attention/rank{a}")
        assert "model.layers.1.moe.gate.weight" in store.entries
        assert not any(".mlp." in n or "experts" in n or "share_expert" in n for n in store.entries)
        for name in store.entries:
            assert torch.equal(store.get(name), reader.get(name))
        assert json.loads((out / f"attention/rank{a}/config.json").read_text())["mapping"][
            "placement"] == {"experts": 6, "ep": ep, "tp": tp, "name": "balanced"}


def test_bad_mappings_are_named(tiny_checkpoint, tmp_path):
    with pytest.raises(BuildConfigError, match="`mapping.ffn.ep` = 7 exceeds the model's 6 "
                                               "experts"):
        convert(tiny_checkpoint, build_config(ep=7), tmp_path / "x", progress=False)
    with pytest.raises(BuildConfigError, match="`mapping.ffn.tp` = 37 exceeds "
                                               "`share_expert_dim` = 36"):
        convert(tiny_checkpoint, build_config(tp=37), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_dtype_cast_and_memory_plan(tiny_checkpoint, tmp_path):
    build = build_config(dtypes={"weights": "bfloat16"})
    out = convert(tiny_checkpoint, build, tmp_path / "bf16", progress=False)
    store = TensorStore(out / "ffn/rank0")
    assert {e.dtype for e in store.entries.values()} == {"BF16"}
    plan = memory_plan(CheckpointReader(tiny_checkpoint).config, build)
    ffn = next(r for r in plan if r.rank == "ffn/rank0")
    assert ffn.weight_bytes == sum(e.nbytes for e in store.entries.values())
    cfg = CheckpointReader(tiny_checkpoint).config
    with pytest.raises(BuildConfigError, match=r"attention/rank0: weights \(0.00 GiB\) \+ reserve "
                                               r"\(0.10 GiB\) exceed `memory.per_rank_gb`"):
        memory_plan(cfg, build_config(memory={"per_rank_gb": 0.1, "reserve_gb": 0.1}))
    with pytest.raises(BuildConfigError, match="the KV cache holds 64 tokens, fewer than one "
                                               "sequence of `runtime.max_seq_len` = 1024"):
        memory_plan(cfg, build_config(kv_cache={"max_tokens": 64}))
    # float32 KV: 2 x 24 x 4 bytes x 4 layers = 768 B per token
    with pytest.raises(BuildConfigError, match=r"`kv_cache.max_tokens` = 10000000 needs 7.15 GiB"):
        memory_plan(cfg, build_config(kv_cache={"max_tokens": 10_000_000}))


def test_interrupted_convert_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = StreamingShardWriter.write

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return original(self, name, tensor)

    monkeypatch.setattr(StreamingShardWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        convert(tiny_checkpoint, build_config(ep=2), tmp_path / "roles", progress=False)
    assert list(tmp_path.iterdir()) == []


PEAK_SCRIPT = """
import json, sys
from step3_trt.build_config import BuildConfig
from step3_trt.convert.convert import convert
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak-RSS counter
base = hwm()
build = BuildConfig.from_dict({'mapping': {'ffn': {'ep': 2}}, 'memory': {'per_rank_gb': 4}})
convert(sys.argv[1], build, sys.argv[2], progress=False)
print(json.dumps({'base': base, 'peak': hwm()}))
"""


@pytest.mark.slow
def test_convert_peak_memory_is_a_few_tensors_not_the_checkpoint(tmp_path):
    from step3_trt.make_checkpoint import make_random_checkpoint

    sizes = {"hidden_size": 256, "num_hidden_layers": 8, "moe_layers_enum": "0,1,2,3,4,5,6,7",
             "moe_num_experts": 16, "moe_intermediate_size": 1024, "vocab_size": 4096}
    ckpt = make_random_checkpoint(tmp_path / "big", seed=0, overrides=sizes)
    reader = CheckpointReader(ckpt)
    largest = max(e.nbytes for e in reader.entries.values())
    total = sum(e.nbytes for e in reader.entries.values())
    assert total > 20 * largest  # a non-streaming convert could not pass the bound below
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(ckpt), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    m = json.loads(proc.stdout.splitlines()[-1])
    grew = m["peak"] - m["base"]
    # one source block + its sliced copy + slack for the interpreter and allocator
    assert grew < 3 * largest + 32 * 2**20, (grew, largest, total)
