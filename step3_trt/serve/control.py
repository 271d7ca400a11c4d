"""Triton's HTTP health and model-repository API, as the supervisor uses it (stdlib only)."""

from __future__ import annotations

import urllib.error
import urllib.request


def _status(url: str, method: str = "GET", timeout_s: float = 2.0) -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0  # not listening (yet, or any more)


def server_ready(base: str) -> bool:
    return _status(f"{base}/v2/health/ready") == 200


def model_ready(base: str, model: str) -> bool:
    return _status(f"{base}/v2/models/{model}/ready") == 200


def load_model(base: str, model: str, timeout_s: float) -> bool:
    """Blocks until the model is loaded (its initialize waits for the AFD job) or fails."""
    return _status(f"{base}/v2/repository/models/{model}/load", "POST", timeout_s) == 200


def unload_model(base: str, model: str, timeout_s: float) -> bool:
    return _status(f"{base}/v2/repository/models/{model}/unload", "POST", timeout_s) == 200


def job_up(metrics_base: str) -> float | None:
    """The backend's `step3_afd_job_up` gauge (1 answering, 0 gone), None if not published."""
    request = urllib.request.Request(f"{metrics_base}/metrics")
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("step3_afd_job_up"):
            return float(line.rsplit(" ", 1)[1])
    return None
