"""Bad requests get a clear error naming the problem, and the server stays healthy."""

import numpy as np
import pytest

from tests.serve.clients import grpc_inputs, grpc_stream, http_generate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("body, message", [
    ({"max_tokens": 4}, "missing required input text_input"),
    ({"text_input": "", "max_tokens": 4}, "text_input is empty"),
    ({"text_input": "a", "max_tokens": -3}, "max_tokens must be >= 1, got -3"),
    ({"text_input": "a", "max_tokens": 0}, "max_tokens must be >= 1, got 0"),
    ({"text_input": "a", "max_tokens": 10 ** 9}, "must be below the context length 1024"),
    ({"text_input": "word " * 1100, "max_tokens": 4}, "exceeds the context length 1024"),
    ({"text_input": "a", "max_tokens": 4, "best_of": 2}, "unknown parameter(s) best_of"),
    ({"text_input": "a", "max_tokens": 4, "beam_width": 2},
     "beam_width must be 1 (beam search is not supported), got 2"),
    ({"text_input": "a", "max_tokens": 4, "length_penalty": 0.5}, "length_penalty must be 1.0"),
    ({"text_input": "a", "max_tokens": 4, "return_log_probs": True},
     "return_log_probs must be false (log probabilities are not reported)"),
    ({"text_input": "a", "temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"text_input": "a", "top_p": 1.5}, "top_p must be in [0, 1]"),
    ({"text_input": "a", "top_k": -2}, "top_k must be >= 0"),
    ({"text_input": "a", "max_tokens": 4, "min_length": 9}, "min_length must be in [0"),
])
def test_bad_http_request_gets_a_clear_error(server, body, message):
    status, reply = http_generate(server.http, body)
    assert status == 400
    assert message in reply["error"]


def test_non_utf8_text_is_rejected(server):
    import tritonclient.grpc as grpcclient

    text = grpcclient.InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"\xff\xfe caf\xe9"]], dtype=object))
    out = grpc_stream(server.grpc, {}, inputs=[text, *grpc_inputs({"max_tokens": 4})])
    assert "text_input is not valid UTF-8" in out.error


def test_wrong_type_and_unknown_input_are_rejected_by_triton(server):
    import tritonclient.grpc as grpcclient

    wrong = grpcclient.InferInput("max_tokens", [1, 1], "FP32")
    wrong.set_data_from_numpy(np.array([[4.0]], dtype=np.float32))
    out = grpc_stream(server.grpc, {}, inputs=[*grpc_inputs({"text_input": "a"}), wrong])
    assert "inference input 'max_tokens' data-type is 'FP32', but model 'step3' expects 'INT32'" \
        in out.error
    extra = grpcclient.InferInput("lora_task_id", [1, 1], "UINT64")
    extra.set_data_from_numpy(np.array([[2]], dtype=np.uint64))
    out = grpc_stream(server.grpc, {}, inputs=[*grpc_inputs({"text_input": "a"}), extra])
    assert "unexpected inference input 'lora_task_id'" in out.error


def test_unknown_model_is_an_error(server):
    status, reply = http_generate(server.http, {"text_input": "a"}, model="nope")
    assert status in (400, 404) and "nope" in reply["error"]


def test_server_stays_healthy_after_bad_requests(server):
    http_generate(server.http, {"text_input": ""})
    http_generate(server.http, {"max_tokens": 3})
    assert server.ready()
    status, reply = http_generate(server.http, {"text_input": "Return", "max_tokens": 3})
    assert status == 200 and reply["completion_tokens"] == 3
