"""Triton's administrative APIs locked behind a key that only `step3-trt serve` holds.

tritonserver 2.51 refuses (HTTP 403, gRPC UNAVAILABLE) every call of a restricted API category
that lacks the key's header (`--http-restricted-api`, `--grpc-restricted-protocol`). Locked:
model-repository (index, load, unload, and so load with a config or `file:` override),
shared-memory (system and CUDA: status, register, unregister), logging and trace settings.
Open: health, metadata, inference, statistics and model-config (`GET .../config`), which
perf_analyzer (and genai-perf through it) must read to run at all; the config holds no
mutation and the parameters serve fills in are paths and timeouts.

The key is random per run and lives in this process (and in tritonserver's command line: see
docs/serving.md, "Limits"); `repr` never shows it, and nothing logs it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

LOCKED_APIS = ("model-repository", "shared-memory", "logging", "trace")
HEADER = "step3-admin-key"  # HTTP header; gRPC metadata key "triton-grpc-protocol-" + HEADER


@dataclass(frozen=True)
class AdminKey:
    value: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)

    def headers(self) -> dict[str, str]:
        """What an HTTP call of a locked API must carry."""
        return {HEADER: self.value}

    def server_args(self) -> list[str]:
        """tritonserver's options: `<apis>:<header>=<value>` (the gRPC header gets Triton's
        prefix)."""
        spec = f"{','.join(LOCKED_APIS)}:{HEADER}={self.value}"
        return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]
