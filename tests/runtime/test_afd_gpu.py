"""The AFD job on a GPU: coordinator, 2 attention and 2 FFN ranks under the real mpiexec, all
sharing one GPU, their decode steps replayed from per-layer CUDA graphs with 3 micro-batches in
flight (micro-batches of one bucket share the graphs' static buffers). float32 engines:
greedy tokens identical to the in-process runner's eager ones."""

import json

import pytest

from step3_trt.build_config import BuildConfig
from tests.conftest import REPO, make_engines
from step3_trt.runtime.local import LocalRunner
from step3_trt.sampling import SamplingParams
from tests.runtime.test_afd import prompts_file, run_cli

pytestmark = pytest.mark.gpu


def test_afd_job_on_cuda_with_graphs_gives_the_eager_tokens(tiny_checkpoint, tmp_path,
                                                            graph_cache):
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml").to_dict()
    raw.update(name="tiny-cuda-2a2f", device="cuda", graph_format="exported")
    build = BuildConfig.from_dict(raw)
    assert build.runtime.cuda_graphs and build.runtime.micro_batches == 3
    engines = make_engines(tiny_checkpoint, build, tmp_path, graph_cache)[1]
    prompts = prompts_file(tmp_path / "p.jsonl", n=24, max_tokens=20, spread_s=0.5)
    proc = run_cli("--engines", engines, "--prompts-file", tmp_path / "p.jsonl",
                   "--run-dir", tmp_path / "run", "--timeout", "120", timeout=600)
    assert proc.returncode == 0, proc.stderr
    outputs = [json.loads(x)["output_ids"] for x in proc.stdout.splitlines()]
    eager = LocalRunner(engines, cuda_graphs=False)
    assert outputs == eager.generate(prompts, SamplingParams(max_new_tokens=20, greedy=True))
