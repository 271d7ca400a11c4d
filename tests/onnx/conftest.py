"""Engines of the bundled model (models/step3-tiny) on 2 attention replicas + 2 expert-parallel FFN
ranks, built once per session: inductor engines and ONNX engines from the same role checkpoints
(the ONNX ones through the `--backend onnx` path, which needs no re-conversion).

The KV cache is 1024 tokens instead of tiny-cpu-2a2f's 8192: ONNX Runtime's Python custom ops
copy both caches through every kv_append, and the cache size changes no graph (the compiled
inductor graphs are the same ones tests/runtime builds for this model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from step3_trt.build_config import BuildConfig
from step3_trt.onnx.build import build_onnx_engines
from step3_trt.presets import DEFAULT_CHECKPOINT
from tests.conftest import REPO, make_engines


@dataclass(frozen=True)
class BundledEngines:
    build: BuildConfig
    roles: Path
    inductor: Path
    onnx: Path


def small_kv_2a2f() -> BuildConfig:
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml").to_dict()
    raw["name"] = "tiny-cpu-2a2f-kv1024"
    raw["kv_cache"]["max_tokens"] = 1024
    return BuildConfig.from_dict(raw)


@pytest.fixture(scope="session")
def bundled(tmp_path_factory, graph_cache) -> BundledEngines:
    root = tmp_path_factory.mktemp("onnx-bundled")
    build = small_kv_2a2f()
    roles, inductor = make_engines(DEFAULT_CHECKPOINT, build, root, graph_cache)
    onnx_dir, reused = build_onnx_engines(roles, build, root / "onnx", cache_dir=graph_cache,
                                          progress=False)
    assert not reused
    return BundledEngines(build, roles, inductor, onnx_dir)
