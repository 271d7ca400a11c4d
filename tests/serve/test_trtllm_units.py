"""The TensorRT-LLM backend's interface without a server: the committed configs against the
input tables, the checks each input gets (fields, fixed values, refusals), TensorRT-LLM's greedy
rule, word lists, the tokenizer steps, the output formats, the penalties and stop token
sequences."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.runtime.request import Request
from step3_trt.sampling import SamplingParams, apply_penalties, sample
from step3_trt.serve import interfaces, tensors
from step3_trt.serve.interfaces import read_fields
from step3_trt.serve.outputs import BlsText, TokenIds
from step3_trt.serve.request import BadRequest, Limits, check, tokenize
from step3_trt.serve.tokenizer_steps import postprocess, preprocess
from step3_trt.serve.tritonserver import render_repository
from step3_trt.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[2] / "triton_repo"
TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
EOS = frozenset({1, 128})
LIMITS = Limits.of(TOKENIZER, 64, eos_token_ids=EOS)
TABLES = {"step3": interfaces.STEP3, "tensorrt_llm": interfaces.TENSORRT_LLM,
          "tensorrt_llm_bls": interfaces.TENSORRT_LLM_BLS,
          "preprocessing": interfaces.PREPROCESSING, "postprocessing": interfaces.POSTPROCESSING}


def config(model: str) -> model_config_pb2.ModelConfig:
    text = (REPO / model / "config.pbtxt").read_text().replace("${decoupled_mode}", "false")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("model", sorted(TABLES))
def test_each_config_declares_exactly_its_tables_inputs_and_which_are_required(model):
    cfg, table = config(model), TABLES[model]
    assert {i.name for i in cfg.input} == set(table.specs)
    assert {i.name for i in cfg.input if not i.optional} == set(table.required)
    assert cfg.max_batch_size == 1  # one sequence a request; batching is the AFD scheduler's
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["interface"] == model



@pytest.mark.parametrize("decoupled", ["true", "false"])
def test_serve_fills_in_decoupled_mode_and_refuses_an_unfilled_placeholder(tmp_path, decoupled):
    out = render_repository(REPO, tmp_path / "a", {"tensorrt_llm": {"engines": "E"}},
                            {"decoupled_mode": decoupled})
    cfg = text_format.Parse((out / "tensorrt_llm" / "config.pbtxt").read_text(),
                            model_config_pb2.ModelConfig())
    assert cfg.model_transaction_policy.decoupled == (decoupled == "true")
    assert cfg.parameters["engines"].string_value == "E"
    with pytest.raises(ValueError, match=r"placeholder \$\{decoupled_mode\} is not filled in"):
        render_repository(REPO, tmp_path / "b", {"tensorrt_llm_bls": {}})

def test_the_ensemble_wires_only_declared_tensors():
    cfg = config("ensemble")
    inputs = {i.name for i in cfg.input}
    produced = set(inputs)
    for step in cfg.ensemble_scheduling.step:
        step_cfg = config(step.model_name)
        assert set(step.input_map) <= {i.name for i in step_cfg.input}, step.model_name
        assert set(step.output_map) <= {o.name for o in step_cfg.output}, step.model_name
        assert set(step.input_map.values()) <= produced, step.model_name
        produced |= set(step.output_map.values())
    assert {o.name for o in cfg.output} <= produced
    # every ensemble input reaches a step, so none is dropped on the way
    used = {v for step in cfg.ensemble_scheduling.step for v in step.input_map.values()}
    assert inputs <= used


def arrays(**values):
    out = {}
    for name, value in values.items():
        arr = np.array(value)
        out[name] = arr.astype(object) if arr.dtype.kind in "US" else arr
    return out


def inflight_client(**extra):
    """The tensors inflight_batcher_llm_client.py sends (its defaults) for one prompt."""
    ids = TOKENIZER.encode("Return a list")
    return arrays(input_ids=np.array([ids], np.int32),
                  input_lengths=np.array([[len(ids)]], np.int32),
                  request_output_len=np.array([[8]], np.int32),
                  beam_width=np.array([[1]], np.int32), temperature=np.array([[1.0]], np.float32),
                  streaming=np.array([[False]]), end_id=np.array([[1]], np.int32),
                  pad_id=np.array([[2]], np.int32), return_log_probs=np.array([[False]]),
                  runtime_top_k=np.array([[1]], np.int32),
                  runtime_top_p=np.array([[0.0]], np.float32), **extra)


def check_tokens(inputs, parameters=None, **kwargs):
    parameters = {"Streaming": False} if parameters is None else parameters
    return check(interfaces.TENSORRT_LLM, inputs, parameters, LIMITS,
                 include_input=True, **kwargs)


def test_the_inflight_clients_request_is_greedy_with_tensorrt_llms_defaults():
    checked = check_tokens(inflight_client())
    assert checked.prompt == TOKENIZER.encode("Return a list")
    assert checked.params.is_greedy and checked.params.max_new_tokens == 8
    assert checked.params.stop_token_ids == ()  # end_id 1 is an end token already
    assert checked.min_tokens == 1 and checked.params.seed == 0  # TensorRT-LLM's defaults
    assert checked.include_input and not checked.stream
    assert checked.params.repetition_penalty == 1.0


@pytest.mark.parametrize("extra, message", [
    ({"beam_width": np.array([[2]], np.int32)},
     r"beam_width must be 1 \(beam search is not supported\), got 2"),
    ({"len_penalty": np.array([[1.5]], np.float32)}, "len_penalty must be 1.0 .*only 1.0"),
    ({"return_log_probs": np.array([[True]])}, "return_log_probs must be false"),
    ({"return_context_logits": np.array([[True]])}, "return_context_logits must be false"),
    ({"lora_task_id": np.array([[3]], np.uint64)}, "lora_task_id: LoRA adapters are not"),
    ({"draft_input_ids": np.array([[5, 6]], np.int32)}, "draft_input_ids: draft tokens"),
    ({"prompt_embedding_table": np.zeros((1, 2, 4), np.float16)},
     "prompt_embedding_table: prompt tables"),
    ({"guided_decoding_guide": np.array([["{}"]], object)},
     "guided_decoding_guide: guided decoding is not supported"),
    ({"decoder_input_ids": np.array([[0, 5]], np.int32)}, "decoder_input_ids must be empty"),
    ({"embedding_bias": np.ones((1, 4), np.float32)}, "embedding_bias must be empty"),
    ({"stop": np.array([[True]])}, "stop must be false .*cancel it"),
    ({"early_stopping": np.array([[True]])}, "early_stopping: it applies to beam search"),
    ({"seed": np.array([[3]], np.uint64), "random_seed": np.array([[3]], np.uint64)},
     "give one of random_seed and seed, not both"),
    ({"end_id": np.array([[10 ** 6]], np.int32)}, r"end_id must be a token id in \[0, "),
    ({"runtime_top_k": np.array([[-1]], np.int32)}, "runtime_top_k must be >= 0"),
    ({"repetition_penalty": np.array([[0.0]], np.float32)},
     "repetition_penalty must be a finite number > 0"),
    ({"min_length": np.array([[9]], np.int32)}, r"min_length must be in \[0, max_tokens=8\]"),
])
def test_inputs_that_need_a_missing_feature_or_bad_values_name_the_input(extra, message):
    inputs = {**inflight_client(), **extra}
    with pytest.raises(BadRequest, match=message):
        check_tokens(inputs)


def test_empty_decoder_and_bias_inputs_as_the_ensemble_passes_them_are_accepted():
    checked = check_tokens({**inflight_client(),
                            "decoder_input_ids": np.zeros((1, 0), np.int32),
                            "decoder_input_lengths": np.array([[0]], np.int32),
                            "embedding_bias": np.zeros((1, 0), np.float32),
                            "stop_words_list": tensors.to_word_lists([]),
                            "bad_words_list": tensors.to_word_lists([[5, 6]])})
    assert checked.bad_words == [[5, 6]] and checked.stop_words == []


def test_streaming_needs_the_decoupled_model_and_the_streaming_parameter_must_agree():
    streaming = {**inflight_client(), "streaming": np.array([[True]])}
    with pytest.raises(BadRequest, match="streaming is only supported if the model is decoupled"):
        check_tokens(streaming, {}, can_stream=False)
    assert check_tokens(streaming, {"Streaming": True}).stream
    with pytest.raises(BadRequest, match=r"parameter Streaming \(False\) disagrees with streaming"):
        check_tokens(streaming, {"Streaming": False})
    with pytest.raises(BadRequest, match="unknown parameter"):
        check_tokens(inflight_client(), {"beam": 2})


def test_the_prompt_is_cut_to_input_lengths_and_checked_against_the_vocabulary():
    ids = TOKENIZER.encode("Return a list")
    inputs = {**inflight_client(), "input_lengths": np.array([[2]], np.int32)}
    assert check_tokens(inputs).prompt == ids[:2]
    with pytest.raises(BadRequest, match=r"input_lengths must be in \[1, 4\]"):
        check_tokens({**inflight_client(), "input_lengths": np.array([[5]], np.int32)})
    with pytest.raises(BadRequest, match="input_ids holds token id 999999, outside"):
        check_tokens({**inflight_client(), "input_ids": np.array([[0, 999999]], np.int32),
                      "input_lengths": np.array([[2]], np.int32)})


@pytest.mark.parametrize("top_k, top_p, temperature, greedy", [
    (None, None, 1.0, True),   # end_to_end_grpc_client's default: temperature 1.0 alone
    (1, 0.0, 1.0, True),       # inflight_batcher_llm_client's defaults
    (1, 0.9, 1.0, True),       # top-k 1 is greedy whatever top_p
    (0, 0.9, 0.7, False),      # top-p sampling
    (40, 0.0, 0.7, False),     # top-k sampling (top_p 0 becomes 1)
    (0, 1.0, 1.0, False),      # top-p 1: the whole distribution
    (40, 0.9, 0.0, True),      # temperature 0
])
def test_tensorrt_llms_greedy_rule(top_k, top_p, temperature, greedy):
    values = {"text_input": [["x"]], "max_tokens": np.array([[4]], np.int32),
              "temperature": np.array([[temperature]], np.float32)}
    if top_k is not None:
        values["top_k"] = np.array([[top_k]], np.int32)
    if top_p is not None:
        values["top_p"] = np.array([[top_p]], np.float32)
    params = check(interfaces.TENSORRT_LLM_BLS, arrays(**values), {}, LIMITS).params
    assert params.is_greedy == greedy
    if not greedy:
        assert params.top_p == (1.0 if not top_p else pytest.approx(top_p))


def test_step3_takes_both_release_names_and_its_stop_words_stay_stop_strings():
    inputs = arrays(text_input=[["x"]], random_seed=np.array([[5]], np.uint64),
                    min_tokens=np.array([[2]], np.int32), stop_words=[["STOP"]])
    checked = check(interfaces.STEP3, inputs, {}, LIMITS)
    assert checked.params.seed == 5 and checked.min_tokens == 2
    assert checked.params.stop_strings == ("STOP",) and checked.stop_words == []
    bls = check(interfaces.TENSORRT_LLM_BLS,
                arrays(text_input=[["x"]], max_tokens=np.array([[4]], np.int32),
                       stop_words=[["the list"]]), {}, LIMITS)
    assert bls.params.stop_strings == () and bls.stop_words == ["the list"]
    assert tokenize(bls, TOKENIZER, LIMITS).stop_words == \
        [TOKENIZER.encode("the list", add_special_tokens=False)]
    with pytest.raises(BadRequest, match="missing required input max_tokens"):
        check(interfaces.TENSORRT_LLM_BLS, arrays(text_input=[["x"]]), {}, LIMITS)


def test_word_lists_round_trip_and_read_tensorrt_llms_layouts():
    words = [[5, 6, 7], [9]]
    arr = tensors.to_word_lists(words)
    assert arr.shape == (1, 2, 4) and arr.tolist() == [[[5, 6, 7, 9], [3, 4, -1, -1]]]
    assert tensors.word_lists({"w": arr}, "w") == words
    assert tensors.word_lists({"w": np.array([[[0], [-1]]], np.int32)}, "w") == []  # [""]
    assert tensors.word_lists({"w": np.zeros((1, 2, 0), np.int32)}, "w") == []
    with pytest.raises(BadRequest, match="word end offsets must increase"):
        tensors.word_lists({"w": np.array([[[5, 6], [2, 1]]], np.int32)}, "w")
    with pytest.raises(BadRequest, match=r"must be an integer tensor \[1, 2, L\]"):
        tensors.word_lists({"w": np.ones((1, 3, 2), np.int32)}, "w")


def fields(table, **values):
    return read_fields(table, arrays(**values), {})


def test_preprocessing_encodes_as_step3_and_has_no_decoder_input():
    out = preprocess(fields(interfaces.PREPROCESSING, QUERY=[["Return a list"]],
                            REQUEST_OUTPUT_LEN=np.array([[8]], np.int32),
                            BAD_WORDS_DICT=[[""]], STOP_WORDS_DICT=[["the list", ""]]),
                     TOKENIZER, LIMITS)
    ids = TOKENIZER.encode("Return a list")
    assert out["INPUT_ID"].tolist() == [ids] and out["REQUEST_INPUT_LEN"].tolist() == [[len(ids)]]
    assert out["DECODER_INPUT_ID"].shape == (1, 0) and out["REQUEST_DECODER_INPUT_LEN"][0, 0] == 0
    assert tensors.word_lists(out, "BAD_WORDS_IDS") == []
    assert tensors.word_lists(out, "STOP_WORDS_IDS") == \
        [TOKENIZER.encode("the list", add_special_tokens=False)]
    assert out["OUT_END_ID"][0, 0] == TOKENIZER.eos_token_id
    assert out["OUT_PAD_ID"][0, 0] == TOKENIZER.token_id(TOKENIZER.special_tokens["pad_token"])
    assert out["REQUEST_OUTPUT_LEN"].tolist() == [[8]] and out["EMBEDDING_BIAS"].shape == (1, 0)
    with pytest.raises(BadRequest, match="DECODER_QUERY: Step-3 is a decoder-only model"):
        fields(interfaces.PREPROCESSING, QUERY=[["x"]], DECODER_QUERY=[["y"]],
               REQUEST_OUTPUT_LEN=np.array([[8]], np.int32))


def test_postprocessing_decodes_each_beam_to_its_length_and_passes_the_rest_through():
    ids = TOKENIZER.encode("Return a list of")
    tokens = np.array([[ids + [-1, -1]]], np.int32)
    out = postprocess(fields(interfaces.POSTPROCESSING, TOKENS_BATCH=tokens,
                             SEQUENCE_LENGTH=np.array([[len(ids)]], np.int32),
                             CUM_LOG_PROBS=np.array([[-1.5]], np.float32)),
                      TOKENIZER, LIMITS, skip_special_tokens=True)
    assert out["OUTPUT"].tolist() == [TOKENIZER.decode(ids).encode()]
    assert out["OUT_CUM_LOG_PROBS"].tolist() == [[-1.5]]
    assert out["OUT_GENERATION_LOGITS"].shape == (1, 1, 1, 1) and out["OUT_BATCH_INDEX"][0, 0] == 0
    with pytest.raises(BadRequest, match=r"SEQUENCE_LENGTH must be in \[0, "):
        postprocess(fields(interfaces.POSTPROCESSING, TOKENS_BATCH=tokens,
                           SEQUENCE_LENGTH=np.array([[99]], np.int32)),
                    TOKENIZER, LIMITS, skip_special_tokens=True)


def generation(stream: bool, include_input: bool = False):
    checked = check_tokens({**inflight_client(), "streaming": np.array([[stream]])},
                           {"Streaming": stream})
    return replace(tokenize(checked, TOKENIZER, LIMITS), include_input=include_input)


def test_token_outputs_drop_the_end_token_and_repeat_the_prompt_unless_excluded():
    result = {"output_ids": [7, 8, 1], "finish_reason": "stop"}
    plain = TokenIds(generation(False, include_input=True), EOS)
    prompt = TOKENIZER.encode("Return a list")
    out = plain.final(result)
    assert out["output_ids"].tolist() == [[prompt + [7, 8]]]
    assert out["sequence_length"].tolist() == [[len(prompt) + 2]]
    assert out["output_log_probs"].shape == (1, 1, len(prompt))  # as TensorRT-LLM's dummy
    assert out["context_logits"].shape == (1, 1, 1) and out["batch_index"].tolist() == [[0]]
    streamed = TokenIds(generation(True), EOS)
    assert streamed.delta([7])["output_ids"].tolist() == [[[7]]]
    final = streamed.final(result)
    assert final["output_ids"].tolist() == [[[8]]] and final["sequence_length"].tolist() == [[1]]
    at_length = TokenIds(generation(False), EOS).final({"output_ids": [7, 1], "finish_reason":
                                                        "length"})
    assert at_length["output_ids"].tolist() == [[[7, 1]]]  # only a stop drops it


def test_bls_text_streams_final_text_and_decodes_the_prompt_with_the_output():
    words = TOKENIZER.encode(" all the given fields", add_special_tokens=False)
    result = {"output_ids": words + [1], "finish_reason": "stop"}
    streamed = BlsText(TOKENIZER, generation(True), EOS, accumulate=False)
    pieces = [streamed.delta([t]) for t in words[:-1]]
    pieces = [p["text_output"][0].decode() for p in pieces if p is not None]
    last = streamed.final(result)["text_output"]
    assert last.shape == (1,)  # as TensorRT-LLM's postprocessing: [batch x beams]
    assert "".join(pieces) + last[0].decode() == TOKENIZER.decode(words)
    whole = BlsText(TOKENIZER, generation(False, include_input=True), EOS, accumulate=False)
    assert whole.final(result)["text_output"][0].decode() == \
        TOKENIZER.decode(TOKENIZER.encode("Return a list") + words)


def test_penalties_follow_tensorrt_llms_kernel():
    logits = torch.tensor([1.0, -1.0, 2.0, 0.5, -2.0, 3.0])
    tokens = [2, 2, 4, 1]  # counts: 1 -> 1, 2 -> 2, 4 -> 1
    params = SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    got = apply_penalties(logits, tokens, params)
    expect = [1.0, -1.0 * 2 - 0.5 - 0.25, 2.0 / 2 - 0.5 - 0.5, 0.5, -2.0 * 2 - 0.5 - 0.25, 3.0]
    assert got.tolist() == pytest.approx(expect)
    assert torch.equal(apply_penalties(logits, tokens, SamplingParams()), logits)
    assert torch.equal(logits, torch.tensor([1.0, -1.0, 2.0, 0.5, -2.0, 3.0]))  # not in place
    # greedy decoding follows the penalized logits
    greedy = SamplingParams(greedy=True, repetition_penalty=4.0)
    assert sample(apply_penalties(logits, [5], greedy), greedy, None) == 2
    nan = apply_penalties(torch.tensor([math.nan, 1.0]), [0, 1], params)
    assert nan[0].isnan() and nan[1] == pytest.approx(0.5 - 0.5 - 0.25)


@pytest.mark.parametrize("kwargs", [{"repetition_penalty": 0.0}, {"repetition_penalty": -1.0},
                                    {"presence_penalty": math.inf},
                                    {"frequency_penalty": math.nan}])
def test_penalties_are_finite_and_repetition_positive(kwargs):
    with pytest.raises(ValueError, match="penalty must be a finite number"):
        SamplingParams(**kwargs)


def test_stop_words_end_a_request_on_their_last_token_and_stay_in_the_output():
    req = Request(0, [3, 5], SamplingParams(max_new_tokens=8), stop_words=[[6, 7], [5, 9]])
    for token, expect in ((6, None), (7, "stop")):
        req.output.append(token)
        assert req.stop_reason(EOS, None) == expect
    assert req.output == [6, 7]
    straddle = Request(1, [3, 5], SamplingParams(max_new_tokens=8), stop_words=[[5, 9]])
    straddle.output.append(9)  # the word began in the prompt
    assert straddle.stop_reason(EOS, None) == "stop"
