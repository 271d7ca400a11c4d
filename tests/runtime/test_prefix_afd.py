"""Prefix caching in AFD jobs under the real mpiexec (`step3-trt run`, CPU): requests in families
that share long prefixes, arriving staggered, give the same greedy tokens with caching on and
with `--no-prefix-caching` (and the in-process runner's); each family is served by one attention
rank, whose cache supplies its followers' prefixes; a tiny KV cache preempts and still gives
the same tokens."""

import json

import pytest
import torch

from tests.conftest import make_engines
from tests.runtime.test_afd import config, expected, request_lines, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_kv(tiny_checkpoint, tmp_path_factory, graph_cache):
    small = config(2, 2, kv_cache={"max_tokens": 96}, runtime={"max_seq_len": 96})
    return make_engines(tiny_checkpoint, small, tmp_path_factory.mktemp("kv"), graph_cache)[1]


def families(path, max_tokens, spread_s=1.5):
    """Two families of four: a 40-token prefix each, then each request's own tokens; the first
    of each family arrives at once, the others later."""
    g = torch.Generator().manual_seed(7)
    rand = lambda n: torch.randint(0, 300, (n,), generator=g).tolist()  # noqa: E731
    prefixes = [rand(40), rand(40)]
    lines = []
    for i in range(8):
        family, nth = i % 2, i // 2
        lines.append({"prompt_ids": prefixes[family] + rand(3 + 4 * nth), "max_tokens": max_tokens,
                      "greedy": True, "arrival_s": 0.0 if nth == 0 else spread_s * nth / 3})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return [x["prompt_ids"] for x in lines]


def run(engines, tmp_path, name, *extra):
    proc = run_cli("--engines", engines, "--prompts-file", tmp_path / "p.jsonl",
                   "--run-dir", tmp_path / name, *extra)
    assert proc.returncode == 0, proc.stderr
    outputs = [x["output_ids"] for x in request_lines(proc.stdout)]
    stats = json.loads((tmp_path / name / "stats.json").read_text())["requests"]
    return outputs, [stats[str(i)] for i in range(len(outputs))]


def test_afd_tokens_are_identical_with_caching_on_and_off(engines_2a2f, tmp_path):
    engines = engines_2a2f[1]
    prompts = families(tmp_path / "p.jsonl", max_tokens=12)
    on, on_stats = run(engines, tmp_path, "on")
    off, off_stats = run(engines, tmp_path, "off", "--no-prefix-caching")
    assert on == off == expected(engines, prompts, 12)
    assert all(s["cached_tokens"] == 0 for s in off_stats)
    assert all(s["cached_tokens"] % 16 == 0 for s in on_stats)
    # followers found their family's prefix (32 of its 40 tokens are full blocks) once the
    # first request's prefill was done: at least the last follower of each family
    assert on_stats[6]["cached_tokens"] >= 32 and on_stats[7]["cached_tokens"] >= 32
    for family in (0, 1):  # one rank per family, and the two families on different ranks
        assert len({s["served_by"] for s in on_stats[family::2]}) == 1
    assert on_stats[0]["served_by"] != on_stats[1]["served_by"]


def test_a_tiny_cache_preempts_and_gives_identical_tokens(engines_2a2f, small_kv, tmp_path):
    prompts = families(tmp_path / "p.jsonl", max_tokens=30, spread_s=0.3)
    outputs, stats = run(small_kv, tmp_path, "on")
    assert sum(s["preemptions"] for s in stats) > 0
    assert outputs == expected(engines_2a2f[1], prompts, 30)
