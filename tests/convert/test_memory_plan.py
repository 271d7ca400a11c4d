"""The memory plan of placement P2: FFN ranks count their replicas of the shared expert and the
dense MLPs, and a mapping whose plan does not fit is refused by `inspect --config` and `build`
(naming the rank) before anything is built."""

import json
import subprocess
import sys

import pytest

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.reader import CheckpointReader, TensorStore
from step3_trt.config import Step3Config
from step3_trt.convert.convert import convert
from step3_trt.convert.memory_plan import memory_plan
from step3_trt.engine.build import build_engines
from step3_trt.presets import PRESETS


def config(ep=2, tp=1, per_rank_gb=1.0, reserve_gb=0.0, **extra):
    return BuildConfig.from_dict({"name": "plan", "mapping": {"ffn": {"ep": ep, "tp": tp}},
                                  "memory": {"per_rank_gb": per_rank_gb, "reserve_gb": reserve_gb},
                                  "kv_cache": {"max_tokens": 64}, "runtime": {"max_seq_len": 64},
                                  **extra})


@pytest.mark.parametrize("ep, tp", [(2, 1), (4, 1), (2, 2)])
def test_ffn_ranks_count_their_replicas(tiny_checkpoint, tmp_path, ep, tp):
    build = config(ep, tp)
    out = convert(tiny_checkpoint, build, tmp_path / "roles", progress=False)
    for rank in memory_plan(CheckpointReader(tiny_checkpoint).config, build):
        store = TensorStore(out / rank.rank)
        entries = store.entries
        assert rank.weight_bytes == sum(e.nbytes for e in entries.values())
        assert rank.replicated_bytes == sum(e.nbytes for n, e in entries.items()
                                            if ".mlp." in n or ".share_expert." in n)
        assert (rank.replicated_bytes > 0) == rank.rank.startswith("ffn/")


def test_step3_ffn_rank_holds_its_experts_and_whole_replicas():
    cfg = Step3Config.from_dict(PRESETS["step3"])
    build = BuildConfig.from_dict({"mapping": {"attention": {"ranks": 16}, "ffn": {"ep": 16}},
                                   "dtypes": {"weights": "bfloat16"},
                                   "memory": {"per_rank_gb": 80, "reserve_gb": 8}})
    ffn = next(r for r in memory_plan(cfg, build) if r.rank == "ffn/rank0")
    H, E = cfg.hidden_size, cfg.moe_num_experts
    expert, shared, dense = (3 * H * w for w in (cfg.moe_intermediate_size, cfg.share_expert_dim,
                                                 cfg.intermediate_size))
    moe, dense_layers = len(cfg.moe_layers), len(cfg.dense_layers)
    assert ffn.replicated_bytes == 2 * (moe * shared + dense_layers * dense)
    assert ffn.weight_bytes == 2 * moe * (E // 16) * expert + ffn.replicated_bytes
    assert f"{ffn.weight_bytes / 2**30:.2f}" == "49.63"  # docs/afd-model.md §10.2: 49.6 GiB


def test_inspect_config_refuses_a_plan_whose_replicas_do_not_fit(tmp_path):
    yaml = tmp_path / "tight.yaml"
    yaml.write_text(json.dumps({"name": "tight", "dtypes": {"weights": "bfloat16"},
                                "mapping": {"attention": {"ranks": 16}, "ffn": {"ep": 16}},
                                "memory": {"per_rank_gb": 40, "reserve_gb": 8}}))
    proc = subprocess.run([sys.executable, "-m", "step3_trt.cli.main", "inspect", "--preset",
                           "step3", "--config", str(yaml)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "ffn/rank0: weights (49.63 GiB) + reserve (8.00 GiB) exceed `memory.per_rank_gb` " \
           "(40.0 GiB)" in proc.stderr


def test_build_refuses_a_plan_that_does_not_fit_before_building(tiny_checkpoint, tmp_path):
    # 783,826 bytes per rank: the attention rank (702,976 bytes of weights + a 64-token KV cache)
    # fits; an FFN rank's 820,224 bytes (488,448 of them replicas) do not
    build = config(per_rank_gb=0.00073)
    roles = convert(tiny_checkpoint, build, tmp_path / "roles", progress=False)
    with pytest.raises(BuildConfigError, match=r"ffn/rank0: weights \(0.00 GiB\) \+ reserve "
                                               r"\(0.00 GiB\) exceed `memory.per_rank_gb`"):
        build_engines(roles, build, tmp_path / "engines", cache_dir=tmp_path / "cache",
                      progress=False)
    assert not (tmp_path / "engines").exists() and not (tmp_path / "cache").exists()
