"""Small clients of the `step3` model: HTTP generate / generate_stream (stdlib) and gRPC
streaming (tritonclient), as TensorRT-LLM-backend clients would call it."""

from __future__ import annotations

import http.client
import json
import queue
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

TYPES = {"text_input": "BYTES", "max_tokens": "INT32", "stream": "BOOL", "temperature": "FP32",
         "top_k": "INT32", "top_p": "FP32", "seed": "UINT64", "stop_words": "BYTES",
         "bad_words": "BYTES", "min_length": "INT32"}
NUMPY = {"BYTES": object, "INT32": np.int32, "BOOL": bool, "FP32": np.float32,
         "UINT64": np.uint64}


def _connection(base: str) -> http.client.HTTPConnection:
    url = urlparse(base)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=300)


def http_generate(base: str, body: dict, model: str = "step3") -> tuple[int, dict]:
    conn = _connection(base)
    conn.request("POST", f"/v2/models/{model}/generate", json.dumps(body))
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def http_stream(base: str, body: dict, stop_after: int | None = None,
                model: str = "step3") -> list[dict]:
    """Server-sent events of generate_stream; with `stop_after`, disconnect after that many."""
    conn = _connection(base)
    conn.request("POST", f"/v2/models/{model}/generate_stream", json.dumps(body))
    response = conn.getresponse()
    events = []
    for line in response:
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
            if stop_after is not None and len(events) >= stop_after:
                break
    conn.close()
    return events


@dataclass
class StreamResult:
    texts: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)


def grpc_inputs(values: dict):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, value in values.items():
        dtype = TYPES.get(name, "FP32")
        arr = np.array([value if isinstance(value, list) else [value]], dtype=NUMPY[dtype])
        tensor = grpcclient.InferInput(name, list(arr.shape), dtype)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return inputs


def grpc_stream(url: str, values: dict, cancel_after: int | None = None,
                inputs=None) -> StreamResult:
    """One request over the gRPC stream; with `cancel_after`, cancel after that many responses."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer("step3", inputs or grpc_inputs(values),
                              enable_empty_final_response=True)
    out = StreamResult()
    try:
        while True:
            result, error = responses.get(timeout=300)
            if error is not None:
                out.error = str(error)
                break
            text = result.as_numpy("text_output")
            if text is not None:
                out.texts.append(text.reshape(-1)[0].decode())
            ids = result.as_numpy("output_ids")
            if ids is not None:
                out.ids += ids.reshape(-1).tolist()
            reason = result.as_numpy("finish_reason")
            if reason is not None:
                out.finish_reason = reason.reshape(-1)[0].decode()
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            if cancel_after is not None and len(out.texts) >= cancel_after:
                break
    finally:
        client.stop_stream(cancel_requests=cancel_after is not None)
        client.close()
    return out


def metrics(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} for the step3_* series."""
    conn = _connection(url)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("step3_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def total(series: dict[str, float], name: str) -> float:
    return sum(v for k, v in series.items() if k.split("{")[0] == name)


def kv_blocks_used(server) -> float:
    """KV blocks held by requests, over every attention rank (the server's Triton metrics)."""
    return total(metrics(f"http://127.0.0.1:{server.metrics_port}"), "step3_kv_cache_blocks_used")
