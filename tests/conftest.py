"""Shared fixtures: small random checkpoints in the released layout, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from step3_trt.build_config import BuildConfig
from step3_trt.convert.convert import convert
from step3_trt.engine.build import build_engines
from step3_trt.make_checkpoint import make_random_checkpoint
from tests.sizes import ODD_SIZES


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=1)


@pytest.fixture(scope="session")
def odd_checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "odd", seed=2,
                                  overrides=ODD_SIZES)


# ---- engines, built once per session (AOTInductor compiles take seconds each on 2 cores) ----
REPO = Path(__file__).resolve().parents[1]


def make_engines(checkpoint, config, root, cache):
    """Convert + build; `config` is a file name in build_configs/ or a BuildConfig."""
    build = config if isinstance(config, BuildConfig) else \
        BuildConfig.from_file(REPO / "build_configs" / config)
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


@pytest.fixture(scope="session")
def bundled_2a2f(tmp_path_factory, graph_cache):
    """The bundled model's engines, 2 attention + 2 FFN ranks (text that reads as text)."""
    from step3_trt.presets import DEFAULT_CHECKPOINT

    return make_engines(DEFAULT_CHECKPOINT, "tiny-cpu-2a2f.yaml",
                        tmp_path_factory.mktemp("bundled-2a2f"), graph_cache)[1]
