"""Plugin tests: GPU-marked tests are skipped where no CUDA device is visible (unless
TRITON_INTERPRET=1: then they run the Triton kernels in Triton's CPU interpreter)."""

from __future__ import annotations

import os

import pytest
import torch

import plugins  # noqa: F401  (registers torch.ops.step3.*)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not any(m.name == "skip" for m in item.iter_markers()):
            item.add_marker(skip)
