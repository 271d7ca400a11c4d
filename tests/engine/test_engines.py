import json
import shutil
import subprocess
import sys

import pytest
import torch

from step3_trt.build_config import BuildConfig
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.engine.build import build_engines
from step3_trt.generation_config import GenerationConfig
from step3_trt.manifest import ArtifactError
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.local import LocalRunner
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Chunk
from step3_trt.sampling import SamplingParams
from tests.conftest import REPO


@pytest.fixture(params=["1a1f", "2a2f"])
def case(request, odd_checkpoint, tiny_checkpoint, engines_1a1f, engines_2a2f):
    if request.param == "1a1f":
        return odd_checkpoint, engines_1a1f[1]
    return tiny_checkpoint, engines_2a2f[1]


def random_prompts(vocab, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def test_greedy_tokens_match_the_reference_for_32_steps(case):
    checkpoint, engines = case
    model = load_reference_model(CheckpointReader(checkpoint))
    runner = LocalRunner(engines)
    prompts = random_prompts(model.config.vocab_size, (1, 7, 16, 17, 40), seed=3)
    greedy = SamplingParams(max_new_tokens=32, greedy=True)
    # the runner stops at the release's end-of-sequence ids, as the reference does when told them
    stops = GenerationConfig.from_dir(checkpoint, model.config)
    assert runner.generate(prompts, greedy) == generate(model, prompts, stops.with_stops(greedy))


def test_prefill_and_decode_logits_match_the_reference(case):
    checkpoint, engines = case
    model = load_reference_model(CheckpointReader(checkpoint))
    runner = LocalRunner(engines)
    prompts = random_prompts(model.config.vocab_size, (5, 18, 33), seed=4)
    from step3_trt.runtime.block_manager import BlockManager

    blocks = BlockManager(runner.num_blocks, runner.build.kv_cache.block_size)
    reqs = [Request(i, p, SamplingParams()) for i, p in enumerate(prompts)]
    chunks = [Chunk(r, 0, r.prompt, blocks.append(r.request_id, len(r.prompt)), True)
              for r in reqs]
    tables = [blocks.block_table(r.request_id) for r in reqs]
    got = runner.forward(make_batch(chunks, tables, "cpu"))
    want = torch.stack([model(torch.tensor([p]))[0, -1] for p in prompts])
    # float32 end to end; the compiled graphs and the plugin ops only reorder sums
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # one decode step on top of the cached prompts
    nxt = [int(t) for t in want.argmax(-1)]
    chunks = [Chunk(r, len(r.prompt), [t], blocks.append(r.request_id, 1), True)
              for r, t in zip(reqs, nxt)]
    tables = [blocks.block_table(r.request_id) for r in reqs]
    before = runner.attention.k_cache.clone()
    got = runner.forward(make_batch(chunks, tables, "cpu"))
    want = torch.stack([model(torch.tensor([p + [t]]))[0, -1] for p, t in zip(prompts, nxt)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the same step padded as CUDA graphs run it (bucket rows, full-width tables): padding
    # rows change nothing, and write no KV (slot -1) anywhere but the real tokens' slots
    width = runner.attention.table_width
    padded = runner.forward(make_batch(chunks, tables, "cpu", rows=len(chunks) + 3,
                                       table_width=width))
    torch.testing.assert_close(padded, got, rtol=1e-5, atol=1e-5)
    bs = runner.build.kv_cache.block_size
    touched = (runner.attention.k_cache != before).any(-1).nonzero()  # [layer, block, offset]
    slots = {s for c in chunks for s in c.slots}
    assert {int(b) * bs + int(o) for _, b, o in touched.tolist()} == slots


def test_unchanged_inputs_reuse_the_build(engines_2a2f, graph_cache):
    roles, engines = engines_2a2f
    build = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml")
    before = (engines / "manifest.json").stat().st_mtime_ns
    out, reused = build_engines(roles, build, engines, cache_dir=graph_cache, progress=False)
    assert reused and (engines / "manifest.json").stat().st_mtime_ns == before


def test_engine_for_another_config_is_refused(engines_2a2f, graph_cache, tmp_path):
    roles, engines = engines_2a2f
    other = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu.yaml")
    with pytest.raises(ArtifactError, match="was converted with build config `tiny-cpu-2a2f`"):
        build_engines(roles, other, tmp_path / "x", cache_dir=graph_cache, progress=False)
    with pytest.raises(ArtifactError, match="built for build config `tiny-cpu-2a2f`"):
        RankEngine(engines / "ffn" / "rank1", build_digest=other.digest())


def test_missing_rank_and_plugin_version_mismatch(engines_2a2f, tmp_path):
    _, engines = engines_2a2f
    broken = tmp_path / "engines"
    shutil.copytree(engines, broken)
    meta = json.loads((broken / "ffn/rank0/engine.json").read_text())
    meta["plugin_ops"]["moe_experts"] = 999
    (broken / "ffn/rank0/engine.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="plugin op step3::moe_experts version 999"):
        LocalRunner(broken)
    shutil.rmtree(broken / "ffn/rank0")
    with pytest.raises(ArtifactError, match="ffn/rank0: no engine.json"):
        LocalRunner(broken)


def test_cli_generate_engines_prints_what_the_reference_prints(engines_1a1f, odd_checkpoint):
    _, engines = engines_1a1f
    args = ["--prompt", "Hello", "--prompt", "step three", "--greedy", "--max-new-tokens", "9",
            "--json"]
    run = lambda *a: subprocess.run([sys.executable, "-m", "step3_trt.cli.main", "generate", *a],
                                    capture_output=True, text=True, check=True).stdout
    assert run("--engines", str(engines), *args) == run("--checkpoint", str(odd_checkpoint), *args)
