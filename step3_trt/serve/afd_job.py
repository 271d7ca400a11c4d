"""The `afd_job` model: the AFD job's readiness as Triton sees it (no inputs, no outputs).

Triton 2.51's python backend cannot mark a loaded model not ready, and an unloaded model leaves
the server ready; a model that is loading makes `/v2/health/ready` report not ready. So while
the AFD job restarts, `step3-trt serve` unloads and loads `afd_job` again, and its initialize
waits until the supervisor creates the `release_file` (once the restarted job answers the
`step3` backend); `step3` itself stays loaded and answers requests that arrive meanwhile with
an error that says the job is restarting.

Config parameters (filled in by `step3-trt serve`): `release_file`, `timeout_s`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

POLL_S = 0.1


def wait_for_release(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the AFD job did not come back within {timeout_s:g} s")
        time.sleep(POLL_S)


class AfdJobModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("release_file"):
            raise ValueError("model parameter release_file not set: start the server with "
                             "`step3-trt serve --engines DIR`")
        wait_for_release(Path(params["release_file"]), float(params.get("timeout_s") or 600))

    def execute(self, requests: list) -> list:
        error = pb_utils.TritonError("afd_job reports the AFD job's readiness; it takes no "
                                     "requests (send them to step3)",
                                     pb_utils.TritonError.UNSUPPORTED)
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
