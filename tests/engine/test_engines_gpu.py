"""Engines built for CUDA (exported graphs compiled at load + the plugins' Triton kernels)
against the reference model, eagerly and replayed from the runtime's CUDA graphs. Run on a GPU
machine: `scripts/test.sh -m gpu`."""

import pytest
import torch

from step3_trt.build_config import BuildConfig
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.generation_config import GenerationConfig
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.local import LocalRunner
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Chunk
from step3_trt.sampling import SamplingParams
from tests.conftest import REPO, make_engines

pytestmark = pytest.mark.gpu


def cuda_config(dtype: str) -> BuildConfig:
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml").to_dict()
    raw.update(name=f"tiny-cuda-{dtype}", device="cuda", graph_format="exported")
    raw["dtypes"] = {"weights": dtype, "activations": dtype, "kv_cache": dtype}
    return BuildConfig.from_dict(raw)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return load_reference_model(CheckpointReader(tiny_checkpoint))


@pytest.fixture(scope="module")
def cuda_engines(tiny_checkpoint, tmp_path_factory, graph_cache):
    """dtype, checkpoint ("tiny": random, head_dim 24; "bundled": models/step3-tiny, head_dim
    64, the plugins' Triton kernels throughout) -> CUDA engines, built once per module."""
    built = {}

    def get(dtype, checkpoint="tiny"):
        if (dtype, checkpoint) not in built:
            ckpt = tiny_checkpoint if checkpoint == "tiny" else DEFAULT_CHECKPOINT
            built[dtype, checkpoint] = make_engines(ckpt, cuda_config(dtype),
                                                    tmp_path_factory.mktemp(dtype), graph_cache)[1]
        return built[dtype, checkpoint]
    return get


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_engines_match_the_reference(cuda_engines, reference, dtype, tiny_checkpoint):
    runner = LocalRunner(cuda_engines(dtype), cuda_graphs=False)
    assert runner.attention.engine.has("attn_decode")  # the split-KV decode kernel's graph
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (1, 9, 17, 40)]
    params = SamplingParams(max_new_tokens=32, greedy=True)
    got = runner.generate(prompts, params)
    stops = GenerationConfig.from_dir(tiny_checkpoint, reference.config)
    want = generate(reference, prompts, stops.with_stops(params))
    if dtype == "float32":  # same math in fp32 (no TF32): identical greedy tokens
        assert got == want
    # prefill logits against the float32 reference: bf16 rounding gives 1-3e-2 (see
    # tests/model/test_reference.py::test_bfloat16_matches_float32), fp32 ~1e-6
    blocks = BlockManager(runner.num_blocks, runner.build.kv_cache.block_size)
    reqs = [Request(i, p, params) for i, p in enumerate(prompts)]
    chunks = [Chunk(r, 0, r.prompt, blocks.append(r.request_id, len(r.prompt)), True)
              for r in reqs]
    batch = make_batch(chunks, [blocks.block_table(r.request_id) for r in reqs], "cuda")
    logits = runner.forward(batch).cpu().double()
    ref = torch.stack([reference(torch.tensor([p]))[0, -1] for p in prompts]).double()
    err = ((logits - ref).norm() / ref.norm()).item()
    assert err < (1e-4 if dtype == "float32" else 5e-2), err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engines_running_references_stay_eager(cuda_engines, dtype):
    """float32, or a head dim the attention kernels do not take (24): the plugins run their
    references, which synchronize with the host; no graphs even with runtime.cuda_graphs on."""
    runner = LocalRunner(cuda_engines(dtype), cuda_graphs=True)
    assert runner.attention.graphs is None and all(f.graphs is None for f in runner.ffn)


def test_cuda_graphs_bf16_logits_match_eager(cuda_engines):
    """Decode steps eager and replayed from the graphs, the batch shrinking 5 -> 1 so steps run
    padded to buckets 6, 4, 3, 2, 1 with full-width block tables. Kernels differ only in split
    layout, GEMM shapes and atomic order, so bf16 logits agree to bf16 rounding of the
    activations (2^-8 relative per op, ~1e-2 overall); a wrong row, a stale input buffer or a
    padding row that wrote KV gives O(1) errors."""
    eager = LocalRunner(cuda_engines("bfloat16", "bundled"), cuda_graphs=False)
    graphed = LocalRunner(cuda_engines("bfloat16", "bundled"), cuda_graphs=True)
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(0, 4000, (n,), generator=g).tolist() for n in (2, 11, 20, 7, 50)]
    outs = []
    for runner in (eager, graphed):
        blocks = BlockManager(runner.num_blocks, runner.build.kv_cache.block_size)
        reqs = [Request(i, p, SamplingParams()) for i, p in enumerate(prompts)]
        chunks = [Chunk(r, 0, r.prompt, blocks.append(r.request_id, len(r.prompt)), True)
                  for r in reqs]
        runner.forward(make_batch(chunks, [blocks.block_table(r.request_id) for r in reqs],
                                  "cuda"))
        steps = []
        for t in range(6):  # 5, 5, 4, 3, 2, 1 sequences
            live = reqs[:max(1, 5 - max(0, t - 1))]
            chunks = [Chunk(r, len(r.prompt) + t, [7 + t], blocks.append(r.request_id, 1), True)
                      for r in live]
            tables = [blocks.block_table(r.request_id) for r in live]
            steps.append(runner.forward(runner.attention.batch(chunks, tables)).float().cpu())
        outs.append(torch.cat(steps))
    layers = graphed.config.num_hidden_layers
    assert graphed.attention.graphs.captured() == (layers + 2) * 5  # + embed and head
    # FFN calls carry only the rows routed to their rank (dispatch), so their buckets vary
    assert all(f.graphs.captured() > 0 for f in graphed.ffn)
    err = ((outs[1] - outs[0]).norm() / outs[0].norm()).item()
    assert err < 1e-2, err
