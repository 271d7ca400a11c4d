"""Shared fixtures: small random checkpoints in the released layout, made once per session."""

from __future__ import annotations

import pytest
import torch

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
