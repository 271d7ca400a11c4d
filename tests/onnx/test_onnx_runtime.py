"""ONNX engines under ONNX Runtime (plugin ops = custom ops backed by the torch references)
against the inductor engines built from the same role checkpoints.

Tolerances: both sides compute in float32 and differ only in summation order (ONNX Runtime's
MLAS GEMMs vs inductor's kernels, reductions of at most 768 terms), i.e. a few ulps times
sqrt(768) ~ 3e-6 relative; 1e-5 leaves margin, while a wrong weight, layer, scale or expert
moves outputs by far more."""

import json
import subprocess
import sys

import pytest
import torch

from step3_trt.config import Step3Config
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.local import LocalRunner
from step3_trt.sampling import SamplingParams

F32 = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def engines(bundled):
    """(inductor, onnx) RankEngine pairs by rank name."""
    return {rank: (RankEngine(bundled.inductor / rank), RankEngine(bundled.onnx / rank))
            for rank in ("attention/rank0", "ffn/rank0", "ffn/rank1")}


def attention_inputs(cfg: Step3Config, block_size: int, g: torch.Generator):
    """A valid mixed batch: 3 sequences with 5, 0, 18 cached and 3, 1, 4 new tokens."""
    cached, new, num_blocks = [5, 0, 18], [3, 1, 4], 12
    order = torch.randperm(num_blocks, generator=g).tolist()
    lens = [c + n for c, n in zip(cached, new)]
    per_seq = [-(-n // block_size) for n in lens]
    tables = torch.zeros(len(lens), max(per_seq), dtype=torch.int32)
    positions, slots, start = [], [], 0
    for s, (c, n) in enumerate(zip(cached, new)):
        tables[s, :per_seq[s]] = torch.tensor(order[start:start + per_seq[s]])
        start += per_seq[s]
        for p in range(c, c + n):
            positions.append(p)
            slots.append(int(tables[s, p // block_size]) * block_size + p % block_size)
    T = sum(new)
    cache = (num_blocks, block_size, cfg.head_dim)
    return [torch.randn(T, cfg.hidden_size, generator=g), torch.tensor(positions),
            torch.randn(cache, generator=g), torch.randn(cache, generator=g), torch.tensor(slots),
            tables, torch.tensor(lens, dtype=torch.int32),
            torch.tensor([0, *torch.tensor(new).cumsum(0).tolist()], dtype=torch.int32)]


def graph_cases(engine: RankEngine, g: torch.Generator):
    """(graph, runtime inputs, layer) for every graph of the engine, on fresh random inputs."""
    cfg = Step3Config.from_dict(engine.arch)
    H, K, T = cfg.hidden_size, cfg.moe_top_k, 7
    moe, dense = cfg.moe_layers[0], cfg.dense_layers[0]
    offset = torch.tensor(engine.mapping.get("expert_offset", 0), dtype=torch.int32)
    cases = {
        "embed": ([torch.randint(0, cfg.vocab_size, (T,), generator=g)], None),
        "attn_prefill": (attention_inputs(cfg, engine.meta["kv_cache"]["block_size"], g), moe),
        "router": ([torch.randn(T, H, generator=g)], moe),
        "head": ([torch.randn(3, H, generator=g)], None),
        "ffn_moe": ([torch.randn(T, H, generator=g), torch.rand(T, K, generator=g),
                     torch.randint(0, cfg.moe_num_experts, (T, K), generator=g,
                                   dtype=torch.int32), offset], moe),
        "ffn_shared": ([torch.randn(T, H, generator=g)], moe),
        "ffn_dense": ([torch.randn(T, H, generator=g)], dense),
    }
    return [(name, *cases[name]) for name in engine.meta["graphs"]]


@pytest.mark.parametrize("rank", ["attention/rank0", "ffn/rank0", "ffn/rank1"])
def test_every_graph_matches_the_inductor_engine_on_random_inputs(engines, rank):
    inductor, onnx_engine = engines[rank]
    assert set(onnx_engine.meta["graphs"]) == set(inductor.meta["graphs"])
    g = torch.Generator().manual_seed(11)
    for graph, inputs, layer in graph_cases(onnx_engine, g):
        mine = [t.clone() for t in inputs]
        want = inductor(graph, *inputs, layer=layer)
        got = onnx_engine(graph, *mine, layer=layer)
        want, got = (want,) if torch.is_tensor(want) else want, (got,) if torch.is_tensor(got) \
            else got
        assert len(got) == len(want), graph
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape, graph
            torch.testing.assert_close(a, b, **F32, msg=lambda m: f"{graph}: {m}")
        # in-place inputs (the KV caches) end up the same on both sides
        for a, b in zip(mine, inputs):
            torch.testing.assert_close(a, b, **F32, msg=lambda m: f"{graph} inputs: {m}")


def test_attention_writes_the_new_tokens_into_the_caches(engines):
    _, onnx_engine = engines["attention/rank0"]
    g = torch.Generator().manual_seed(5)
    inputs = attention_inputs(Step3Config.from_dict(onnx_engine.arch), 16, g)
    before = inputs[2].clone()
    onnx_engine("attn_prefill", *inputs, layer=0)
    slots = inputs[4]
    changed = (inputs[2] != before).any(-1).flatten().nonzero().flatten()
    assert sorted(changed.tolist()) == sorted(slots.tolist())


GREEDY_PROMPTS = [[0, 5, 17, 99, 3000, 12], [0, 44, 1, 2], list(range(3, 40))]


def test_greedy_generation_gives_the_inductor_tokens(bundled):
    greedy = SamplingParams(max_new_tokens=16, greedy=True)
    want = LocalRunner(bundled.inductor).generate(GREEDY_PROMPTS, greedy)
    got = LocalRunner(bundled.onnx).generate(GREEDY_PROMPTS, greedy)
    assert got == want


def cli(*args):
    cmd = [sys.executable, "-m", "step3_trt.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_build_backend_onnx_then_generate(bundled, graph_cache, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(bundled.build.to_dict()))  # JSON is YAML
    out = tmp_path / "engines"
    proc = cli("build", "--checkpoint", bundled.roles, "--config", config, "--backend", "onnx",
               "--out", out, "--cache-dir", graph_cache, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["backend"] == "onnx"
    prompt = GREEDY_PROMPTS[0]
    proc = cli("generate", "--engines", out, "--prompt-ids", ",".join(map(str, prompt)),
               "--greedy", "--max-new-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    want = LocalRunner(bundled.inductor).generate([prompt], SamplingParams(max_new_tokens=8,
                                                                          greedy=True))
    assert json.loads(proc.stdout.splitlines()[-1])["output_ids"] == want[0]
