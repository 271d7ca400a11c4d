"""Engines built for CUDA (AOTInductor CUDA graphs + the plugins' Triton kernels) against the
reference model. Run on a GPU machine: `scripts/test.sh -m gpu`."""

import pytest
import torch

from step3_trt.build_config import BuildConfig
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.local import LocalRunner
from step3_trt.runtime.scheduler import Chunk, Request
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_engines_match_the_reference(tiny_checkpoint, reference, tmp_path, graph_cache,
                                          dtype):
    _, engines = make_engines(tiny_checkpoint, cuda_config(dtype), tmp_path, graph_cache)
    runner = LocalRunner(engines)
    assert runner.attention.engine.has("attn_decode")  # the split-KV decode kernel's graph
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (1, 9, 17, 40)]
    params = SamplingParams(max_new_tokens=32, greedy=True)
    got = runner.generate(prompts, params)
    want = generate(reference, prompts, params)
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
