"""Triton's HTTP health and model-repository API, as the supervisor uses it (stdlib only).
The repository calls carry the admin key (serve/lockdown.py): without it Triton refuses them."""

from __future__ import annotations

import urllib.error
import urllib.request

from step3_trt.serve.lockdown import AdminKey

# never through an HTTP proxy from the environment: the calls go to this host's server, and the
# repository calls carry the key
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(url: str, method: str = "GET", timeout_s: float = 2.0,
            headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0  # not listening (yet, or any more)


def server_ready(base: str) -> bool:
    return _status(f"{base}/v2/health/ready") == 200


def model_ready(base: str, model: str) -> bool:
    return _status(f"{base}/v2/models/{model}/ready") == 200


def load_model(base: str, model: str, timeout_s: float, admin: AdminKey) -> bool:
    """Blocks until the model is loaded (its initialize waits for the AFD job) or fails."""
    return _status(f"{base}/v2/repository/models/{model}/load", "POST", timeout_s,
                   admin.headers()) == 200


def unload_model(base: str, model: str, timeout_s: float, admin: AdminKey) -> bool:
    return _status(f"{base}/v2/repository/models/{model}/unload", "POST", timeout_s,
                   admin.headers()) == 200


def job_up(metrics_base: str) -> float | None:
    """The backend's `step3_afd_job_up` gauges (1 answering, 0 gone), one per generating model:
    the lowest (0 if the job is gone for any model), None if none is published."""
    request = urllib.request.Request(f"{metrics_base}/metrics")
    try:
        with _OPENER.open(request, timeout=2.0) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("step3_afd_job_up")]
    return min(values) if values else None
