"""Plugin tests: GPU-marked tests are skipped where no CUDA device is visible."""

from __future__ import annotations

import pytest
import torch

import plugins  # noqa: F401  (registers torch.ops.step3.*)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not any(m.name == "skip" for m in item.iter_markers()):
            item.add_marker(skip)
