"""Triton's administrative APIs are locked: without serve's key, every model-repository
(index, load, unload, load with a `file:` or config override), shared-memory, logging and trace
call is refused over HTTP and gRPC, nothing changes, and serving goes on with exact answers.
Health, metadata, statistics and the model config stay open for clients."""

import base64
import http.client
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from step3_trt.serve import control
from tests.serve.clients import http_generate
from tests.serve.server import descendants

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
MARKER = Path("/tmp/step3-lockdown-probe-ran")
EVIL_CODE = f"open({str(MARKER)!r}, 'w').write('pwned')\n" \
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
EVIL_CONFIG = json.dumps({"backend": "python", "max_batch_size": 0,
                          "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
RESTRICTED = "This API is restricted, expecting header 'step3-admin-key'"


def shm_regions(server) -> set[str]:
    """The python backend's /dev/shm regions that this server's processes have mapped."""
    found = set()
    for pid in descendants(server.proc.pid):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found |= {line.split()[-1] for line in maps.splitlines() if "/dev/shm/step3_" in line}
    return found


def request(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request(method, path, json.dumps(body) if body is not None else None)
    response = conn.getresponse()
    return response.status, response.read().decode()


def http_probes(server) -> list[tuple[str, str, dict | None]]:
    region = sorted(shm_regions(server))[0].removeprefix("/dev/shm/")
    override = {"parameters": {"config": json.dumps({
        "backend": "python", "parameters": {"afd_endpoint": {
            "string_value": "tcp://127.0.0.1:9"}}})}}
    return [
        ("POST", "/v2/repository/index", {}),
        ("POST", "/v2/repository/models/step3/unload", {}),
        ("POST", "/v2/repository/models/afd_job/unload", {}),
        ("POST", "/v2/repository/models/step3/load", {}),
        ("POST", "/v2/repository/models/step3/load", override),
        ("POST", "/v2/repository/models/evil/load", {"parameters": {
            "config": EVIL_CONFIG,
            "file:1/model.py": base64.b64encode(EVIL_CODE.encode()).decode()}}),
        ("GET", "/v2/systemsharedmemory/status", None),
        ("POST", "/v2/systemsharedmemory/region/evil/register",
         {"key": region, "offset": 0, "byte_size": 4096}),
        ("POST", "/v2/systemsharedmemory/unregister", {}),
        ("GET", "/v2/cudasharedmemory/status", None),
        ("POST", "/v2/cudasharedmemory/region/evil/register",
         {"raw_handle": {"b64": base64.b64encode(bytes(64)).decode()}, "device_id": 0,
          "byte_size": 16}),
        ("POST", "/v2/cudasharedmemory/unregister", {}),
        ("GET", "/v2/logging", None),
        ("POST", "/v2/logging", {"log_verbose_level": 2}),
        ("GET", "/v2/trace/setting", None),
        ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"}),
        ("POST", "/v2/models/step3/trace/setting", {"trace_level": ["TENSORS"]}),
    ]


def assert_serving_unchanged(server, reference) -> None:
    assert server.ready() and control.model_ready(server.http, "afd_job")
    assert not MARKER.exists(), "the probe's model code ran"
    status, body = request(server.http, "GET", "/v2/models/evil/ready")
    assert status != 200
    ids, text = reference([PROMPT], 24)[0]
    status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 24})
    assert status == 200 and (body["output_ids"], body["text_output"]) == (ids, text)


def test_every_admin_http_call_without_the_key_is_refused(server, reference):
    MARKER.unlink(missing_ok=True)
    for method, path, body in http_probes(server):
        status, reply = request(server.http, method, path, body)
        assert (status, json.loads(reply)["error"]) == (403, RESTRICTED), (method, path, reply)
    assert_serving_unchanged(server, reference)


def test_every_admin_grpc_call_without_the_key_is_refused(server, reference):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    MARKER.unlink(missing_ok=True)
    region = sorted(shm_regions(server))[0].removeprefix("/dev/shm/")
    client = grpcclient.InferenceServerClient(server.grpc)
    probes = [
        lambda: client.get_model_repository_index(),
        lambda: client.unload_model("step3"),
        lambda: client.unload_model("afd_job"),
        lambda: client.load_model("step3"),
        lambda: client.load_model("step3", config=json.dumps({"backend": "python"})),
        lambda: client.load_model("evil", config=EVIL_CONFIG,
                                  files={"file:1/model.py": EVIL_CODE.encode()}),
        lambda: client.get_system_shared_memory_status(),
        lambda: client.register_system_shared_memory("evil", region, 4096),
        lambda: client.unregister_system_shared_memory(),
        lambda: client.get_cuda_shared_memory_status(),
        lambda: client.register_cuda_shared_memory("evil", bytes(64), 0, 16),
        lambda: client.unregister_cuda_shared_memory(),
        lambda: client.get_log_settings(),
        lambda: client.update_log_settings({"log_verbose_level": 2}),
        lambda: client.get_trace_settings(),
        lambda: client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
        lambda: client.update_trace_settings("step3", {"trace_level": ["TENSORS"]}),
    ]
    try:
        for probe in probes:
            with pytest.raises(InferenceServerException, match="This protocol is restricted, "
                               "expecting header 'triton-grpc-protocol-step3-admin-key'"):
                probe()
    finally:
        client.close()
    assert_serving_unchanged(server, reference)


def test_health_metadata_statistics_and_config_stay_open(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/step3",
                 "/v2/models/step3/stats", "/v2/models/step3/config"):
        status, reply = request(server.http, "GET", path)
        assert status == 200, (path, reply)
    config = json.loads(request(server.http, "GET", "/v2/models/step3/config")[1])
    assert config["model_transaction_policy"]["decoupled"] is True  # what perf_analyzer reads
