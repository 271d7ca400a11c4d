"""Timed offline generation with vLLM (run by the vLLM venv's python; see perf/peer/run.py).

    build/peer/venv/bin/python perf/peer/vllm_bench.py SPEC.json OUT.json

SPEC: {"model": DIR, "prompt_sets": {NAME: [[ids...], ...]}, "max_tokens": [1, 64],
       "max_num_seqs": 64, "max_num_batched_tokens": 2048, "max_model_len": 1024,
       "enable_prefix_caching": false}
Every request is greedy (temperature 0) with `ignore_eos`, so each computes exactly max_tokens
tokens. Start-up (`LLM(...)`, then one warm-up generate) is timed apart from the runs; each
prompt set runs once per max_tokens (perf/peer/run.py starts this script once per repeat).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec_file: str, out_file: str) -> int:
    import psutil
    import torch
    import vllm
    import vllm.envs
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.loads(open(spec_file).read())
    t0 = time.perf_counter()
    llm = LLM(model=spec["model"], dtype="float32", seed=0,
              max_num_seqs=spec["max_num_seqs"],
              max_num_batched_tokens=spec["max_num_batched_tokens"],
              max_model_len=spec["max_model_len"],
              enable_prefix_caching=spec["enable_prefix_caching"])
    t_init = time.perf_counter() - t0

    def generate(prompts: list[list[int]], max_tokens: int) -> tuple[float, list[list[int]]]:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        start = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                               use_tqdm=False)
        wall = time.perf_counter() - start
        return wall, [list(o.outputs[0].token_ids) for o in outputs]

    first_set = next(iter(spec["prompt_sets"].values()))
    t_warm, _ = generate(first_set, 2)
    runs = []
    for name, prompts in spec["prompt_sets"].items():
        for max_tokens in spec["max_tokens"]:
            wall, ids = generate(prompts, max_tokens)
            runs.append({"prompt_set": name, "max_tokens": max_tokens, "wall_s": wall,
                         "output_ids": ids})
    sched = llm.llm_engine.vllm_config.scheduler_config
    model_config = llm.llm_engine.vllm_config.model_config
    compilation = llm.llm_engine.vllm_config.compilation_config
    config = {
        "vllm_version": vllm.__version__, "torch_version": torch.__version__,
        "architecture": model_config.architectures, "dtype": str(model_config.dtype),
        "max_num_seqs": sched.max_num_seqs, "max_num_batched_tokens": sched.max_num_batched_tokens,
        "max_model_len": model_config.max_model_len,
        "chunked_prefill": sched.enable_chunked_prefill,
        "prefix_caching": llm.llm_engine.vllm_config.cache_config.enable_prefix_caching,
        "enforce_eager": model_config.enforce_eager,
        "compilation_mode": compilation.mode.name, "compilation_backend": compilation.backend,
        "omp_threads_bind": vllm.envs.VLLM_CPU_OMP_THREADS_BIND,
        "reserved_cpus": vllm.envs.VLLM_CPU_NUM_OF_RESERVED_CPU,
        "frontend_torch_threads": torch.get_num_threads(),
        "processes": [{"name": p.name(), "cpu_affinity": p.cpu_affinity()}
                      for p in psutil.Process().children(recursive=True)],
        "env": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "OMP_"))},
    }
    result = {"config": config, "startup": {"llm_init_s": t_init, "warmup_generate_s": t_warm},
              "runs": runs}
    open(out_file, "w").write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
