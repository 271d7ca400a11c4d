"""Engines built once per test session (AOTInductor compiles take seconds each on 2 cores)."""

import pytest

from step3_trt.build_config import BuildConfig
from step3_trt.convert.convert import convert
from step3_trt.engine.build import build_engines

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def make_engines(checkpoint, config_name, root, cache):
    build = BuildConfig.from_file(REPO / "build_configs" / config_name)
    roles = convert(checkpoint, build, root / "roles", progress=False)
    engines, reused = build_engines(roles, build, root / "engines", cache_dir=cache, progress=False)
    assert not reused
    return roles, engines


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def engines_1a1f(odd_checkpoint, tmp_path_factory, graph_cache):
    """1 attention + 1 FFN rank, on the checkpoint with odd sizes."""
    return make_engines(odd_checkpoint, "tiny-cpu.yaml", tmp_path_factory.mktemp("e11"),
                        graph_cache)


@pytest.fixture(scope="session")
def engines_2a2f(tiny_checkpoint, tmp_path_factory, graph_cache):
    """2 attention replicas + 2 expert-parallel FFN ranks, on the tiny checkpoint."""
    return make_engines(tiny_checkpoint, "tiny-cpu-2a2f.yaml", tmp_path_factory.mktemp("e22"),
                        graph_cache)
