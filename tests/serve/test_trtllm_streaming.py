"""The TensorRT-LLM backend's streaming clients against the real tritonserver + AFD job with the
TensorRT-LLM models decoupled (`step3-trt serve --decoupled`, the backend's decoupled_mode:true):
end_to_end_grpc_client.py -S through the ensemble and BLS, inflight_batcher_llm_client.py -S
(and its --stop-via-request-cancel), HTTP generate_stream, and the non-streaming request through
the decoupled ensemble, each with the reference model's greedy tokens. ModelInfer is Triton's to
refuse for a decoupled model."""

import pytest

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.tokenizer import load_tokenizer
from tests.serve.clients import http_stream
from tests.serve.server import Server
from tests.serve.trtllm_requests import e2e_grpc_inputs, error_text, inflight_infer, \
    inflight_inputs, stream_results

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
N = 24
TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
PROMPT_IDS = TOKENIZER.encode(PROMPT)
END_ID, PAD_ID = 1, 2
EOS = CheckpointReader(DEFAULT_CHECKPOINT).config.eos_token_id


@pytest.fixture(scope="module")
def decoupled(bundled_engines, tmp_path_factory):
    srv = Server(bundled_engines, tmp_path_factory.mktemp("srv-decoupled") / "run",
                 extra=["--decoupled"]).start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def expected(reference):
    ids = reference([PROMPT], N)[0][0]
    return ids[:-1] if ids and ids[-1] == EOS else ids


def texts(results) -> list[str]:
    assert all(error_text(r) is None for r in results), results
    return [r.as_numpy("text_output")[0].decode() for r in results]


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_end_to_end_grpc_client_streams_the_reference_text(decoupled, expected, model):
    results = stream_results(decoupled.grpc, model, e2e_grpc_inputs(PROMPT, N, streaming=True))
    pieces = texts(results)
    assert len(pieces) > 2  # token by token
    assert "".join(pieces) == TOKENIZER.decode(expected)  # streamed: the new text only
    assert all(r.as_numpy("batch_index")[0][0] == 0 for r in results)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_the_decoupled_models_answer_a_non_streaming_request_once(decoupled, expected, model):
    results = stream_results(decoupled.grpc, model, e2e_grpc_inputs(PROMPT, N, streaming=False))
    assert texts(results) == [TOKENIZER.decode(PROMPT_IDS + expected)]


def test_inflight_batcher_client_streams_the_reference_tokens(decoupled, expected):
    results = stream_results(decoupled.grpc, "tensorrt_llm",
                             inflight_inputs(PROMPT_IDS, N, True, END_ID, PAD_ID))
    assert all(error_text(r) is None for r in results), results
    tokens = []
    for r in results:  # the script's callback: output_ids[0][0] while sequence_length > 0
        ids, lengths = r.as_numpy("output_ids"), r.as_numpy("sequence_length")
        assert ids.shape[:2] == (1, 1) and lengths[0][0] == ids.shape[2]
        tokens += list(ids[0][0])
    assert len(results) > 2 and tokens == expected  # streamed: no prompt


def test_a_cancelled_stream_frees_the_request(decoupled):
    results = stream_results(decoupled.grpc, "tensorrt_llm",
                             inflight_inputs(PROMPT_IDS, 200, True, END_ID, PAD_ID),
                             cancel_after=2)
    assert len(results) >= 2
    decoupled.wait_idle(timeout_s=60)  # the job retired it: nothing in flight


def test_generate_stream_through_the_ensemble(decoupled, expected):
    events = http_stream(decoupled.http, {"text_input": PROMPT, "max_tokens": N, "stream": True},
                         model="ensemble")
    assert len(events) > 2 and "".join(e["text_output"] for e in events) == \
        TOKENIZER.decode(expected)


def test_model_infer_is_refused_by_triton_for_the_decoupled_model(decoupled):
    error = error_text(inflight_infer(decoupled.grpc,
                                      inflight_inputs(PROMPT_IDS, 4, False, END_ID, PAD_ID)))
    assert error is not None and "decoupled" in error, error
