"""The TensorRT-LLM backend's client requests against the real tritonserver + AFD job, with the
TensorRT-LLM models not decoupled (`step3-trt serve`'s default, as the backend's quick start):
the requests end_to_end_grpc_client.py, inflight_batcher_llm_client.py and end_to_end_test.py
send (tests/serve/trtllm_requests.py), answered with the reference model's greedy tokens;
TensorRT-LLM's defaults (the prompt repeated, no end token in the output); the README curl with
end_id / pad_id; penalties and stop words against the reference; 400s naming the input."""

import re

import numpy as np
import pytest

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.tokenizer import load_tokenizer
from tests.serve.clients import http_generate
from tests.serve.trtllm_requests import EndToEndTest, e2e_grpc_inputs, error_text, \
    inflight_infer, inflight_inputs, stream_results

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
N = 24
TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
END_ID, PAD_ID = 1, 2  # what inflight_batcher_llm_client.py reads from the tokenizer
PROMPT_IDS = TOKENIZER.encode(PROMPT)


EOS = CheckpointReader(DEFAULT_CHECKPOINT).config.eos_token_id  # where the reference stops


def cut(ids: list[int]) -> list[int]:
    """Tokens as TensorRT-LLM returns them: without the end token that stopped them."""
    return ids[:-1] if ids and ids[-1] == EOS else ids


@pytest.fixture(scope="module")
def expected(reference):
    return cut(reference([PROMPT], N)[0][0])


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_end_to_end_grpc_client_gets_the_prompt_and_the_reference_text(server, expected, model):
    results = stream_results(server.grpc, model, e2e_grpc_inputs(PROMPT, N, streaming=False))
    assert len(results) == 1 and error_text(results[0]) is None, results
    text = results[0].as_numpy("text_output")
    assert text.shape == (1,)  # the script reads output[0].decode()
    assert text[0].decode() == TOKENIZER.decode(PROMPT_IDS + expected)
    assert text[0].decode().startswith(PROMPT)
    assert results[0].as_numpy("batch_index")[0][0] == 0


def test_inflight_batcher_client_gets_the_prompt_and_the_reference_tokens(server, expected):
    result = inflight_infer(server.grpc, inflight_inputs(PROMPT_IDS, N, False, END_ID, PAD_ID))
    assert error_text(result) is None, result
    output_ids, lengths = result.as_numpy("output_ids"), result.as_numpy("sequence_length")
    assert output_ids.shape == (1, 1, len(PROMPT_IDS) + len(expected))
    assert output_ids[0][0].tolist()[:lengths[0][0]] == PROMPT_IDS + expected
    excluded = inflight_infer(server.grpc, inflight_inputs(PROMPT_IDS, N, False, END_ID, PAD_ID,
                                                           exclude_input_in_output=True))
    assert excluded.as_numpy("output_ids")[0][0].tolist() == expected


def test_end_to_end_test_steps_ensemble_and_bls_agree_with_the_reference(server, expected):
    run = EndToEndTest(f"{server.host}:{server.http_port}")
    try:
        out = run.run(PROMPT, N)
    finally:
        run.close()
    pre, llm = out["preprocessing"], out["tensorrt_llm"]
    assert pre.as_numpy("INPUT_ID").tolist() == [PROMPT_IDS]
    assert pre.as_numpy("DECODER_INPUT_ID").shape == (1, 0)
    assert llm.as_numpy("output_ids")[0][0].tolist() == PROMPT_IDS + expected
    text = TOKENIZER.decode(PROMPT_IDS + expected).encode()
    manual = out["postprocessing"].as_numpy("OUTPUT")
    assert manual.tolist() == [text]
    for model in ("ensemble", "tensorrt_llm_bls"):  # the script's own checks, and ours
        result = out[model]
        assert (result.as_numpy("text_output") == manual).all(), model
        assert result.as_numpy("cum_log_probs") == llm.as_numpy("cum_log_probs")
        assert (result.as_numpy("output_log_probs") == llm.as_numpy("output_log_probs")).all()
        context, generation = result.as_numpy("context_logits"), \
            result.as_numpy("generation_logits")
        assert context.shape == (1, 1, 1) and context[0][0][0] == 0
        assert generation.shape == (1, 1, 1, 1) and generation[0][0][0][0] == 0


def test_the_readme_curl_with_end_id_and_pad_id(server, reference):
    body = {"text_input": PROMPT, "max_tokens": 20, "bad_words": "", "stop_words": "",
            "pad_id": PAD_ID, "end_id": END_ID}
    ids = cut(reference([PROMPT], 20)[0][0])
    for model in ("ensemble", "tensorrt_llm_bls"):
        status, reply = http_generate(server.http, body, model=model)
        assert status == 200, reply
        assert reply["text_output"] == TOKENIZER.decode(PROMPT_IDS + ids)
    status, reply = http_generate(server.http, {**body, "exclude_input_in_output": True},
                                  model="ensemble")
    assert status == 200 and reply["text_output"] == TOKENIZER.decode(ids)


@pytest.fixture(scope="module")
def penalized():
    """Greedy reference tokens with penalties (the reference model in float32)."""
    from step3_trt.model.generate import generate
    from step3_trt.model.load import load_reference_model
    from step3_trt.sampling import SamplingParams

    reader = CheckpointReader(DEFAULT_CHECKPOINT)
    model = load_reference_model(reader, dtype="float32")

    def run(max_tokens: int, **penalties) -> list[int]:
        params = SamplingParams(max_new_tokens=max_tokens, greedy=True, **penalties)
        return generate(model, [PROMPT_IDS], params, eos_token_id=reader.config.eos_token_id)[0]

    return run


PENALTIES = {"repetition_penalty": 1.5, "presence_penalty": 0.5, "frequency_penalty": 0.25}


def test_penalties_give_the_penalized_reference_tokens(server, expected, penalized):
    full = penalized(N, **PENALTIES)
    want = cut(full)
    assert want != expected  # the penalties change this greedy continuation
    result = inflight_infer(server.grpc, inflight_inputs(PROMPT_IDS, N, False, END_ID, PAD_ID,
                                                         exclude_input_in_output=True,
                                                         **PENALTIES))
    assert error_text(result) is None, result
    assert result.as_numpy("output_ids")[0][0].tolist() == want
    results = stream_results(server.grpc, "ensemble",
                             e2e_grpc_inputs(PROMPT, N, streaming=False, **PENALTIES))
    assert results[0].as_numpy("text_output")[0].decode() == TOKENIZER.decode(PROMPT_IDS + want)
    status, reply = http_generate(server.http, {"text_input": PROMPT, "max_tokens": N,
                                                **PENALTIES})
    assert status == 200 and reply["output_ids"] == full  # step3 takes them too


def test_a_stop_word_ends_the_output_after_its_tokens(server, expected):
    word = TOKENIZER.decode(expected[2:3])  # a one-token word the greedy output reaches
    assert TOKENIZER.encode(word, add_special_tokens=False) == expected[2:3]
    for model in ("ensemble", "tensorrt_llm_bls"):
        results = stream_results(server.grpc, model,
                                 e2e_grpc_inputs(PROMPT, N, streaming=False, stop_words=[word]))
        assert error_text(results[0]) is None, results
        assert results[0].as_numpy("text_output")[0].decode() == \
            TOKENIZER.decode(PROMPT_IDS + expected[:3])


@pytest.mark.parametrize("model, extra, message", [
    ("ensemble", {"beam_width": 2}, r"beam_width must be 1 \(beam search is not supported\)"),
    ("ensemble", {"length_penalty": 1.2}, "len_penalty must be 1.0 .*only 1.0"),
    ("ensemble", {"return_log_probs": True}, "return_log_probs must be false"),
    ("ensemble", {"stream": True}, "streaming is only supported if the model is decoupled"),
    ("ensemble", {"embedding_bias_words": ["list"], "embedding_bias_weights": [1.0]},
     r"EMBEDDING_BIAS_W\w+ must be empty: embedding bias is not supported"),
    ("tensorrt_llm_bls", {"beam_width": 2}, r"beam_width must be 1 \(beam search"),
    ("tensorrt_llm_bls", {"num_draft_tokens": 3}, "num_draft_tokens must be 0"),
    ("tensorrt_llm_bls", {"stream": True}, "stream is only supported if the model is decoupled"),
    ("tensorrt_llm_bls", {"repetition_penalty": -1.0},
     "repetition_penalty must be a finite number > 0"),
])
def test_unsupported_inputs_get_a_400_naming_the_input(server, model, extra, message):
    status, reply = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 4, **extra},
                                  model=model)
    assert status == 400, reply
    assert re.search(message, reply["error"]), reply


@pytest.mark.parametrize("extra, message", [
    ({"beam_width": np.array([[4]], np.int32)}, "beam_width must be 1"),
    ({"lora_task_id": np.array([[7]], np.uint64)}, "lora_task_id: LoRA adapters"),
    ({"draft_input_ids": np.array([[5, 6]], np.int32)}, "draft_input_ids: draft tokens"),
    ({"return_generation_logits": np.array([[True]])}, "return_generation_logits must be false"),
    ({"stop": np.array([[True]])}, "stop must be false"),
])
def test_tensorrt_llm_refuses_what_it_cannot_do_over_model_infer(server, extra, message):
    import tritonclient.grpc as grpcclient

    from tests.serve.trtllm_requests import tensor

    inputs = [t for t in inflight_inputs(PROMPT_IDS, 4, False, END_ID, PAD_ID)
              if t.name() not in extra] + [tensor(grpcclient, k, v) for k, v in extra.items()]
    error = error_text(inflight_infer(server.grpc, inputs))
    assert error is not None and message in error, error
    assert "internal error" not in error


def test_streaming_on_the_not_decoupled_model_is_refused(server):
    inputs = inflight_inputs(PROMPT_IDS, 4, True, END_ID, PAD_ID)
    error = error_text(inflight_infer(server.grpc, inputs, streaming=True))
    assert error is not None and "streaming is only supported if the model is decoupled" in error
