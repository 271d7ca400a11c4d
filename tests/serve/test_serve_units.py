"""The backend's pure parts without a server: request parsing, streaming detokenization with
stop words, and the bad_words / min_length bans the attention ranks apply."""

import numpy as np
import pytest
import torch

from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.runtime.afd.token_bans import TokenBans
from step3_trt.runtime.scheduler import Chunk, Request
from step3_trt.sampling import SamplingParams
from step3_trt.serve.detok import TextStream
from step3_trt.serve.request import BadRequest, Limits, parse_request
from step3_trt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
LIMITS = Limits(64)


def parse(**inputs):
    arrays = {k: np.array([[v]], dtype=object if isinstance(v, (str, bytes)) else None)
              for k, v in inputs.items()}
    return parse_request(arrays, {}, TOKENIZER, LIMITS)


def test_defaults_are_greedy_and_values_are_plain_python():
    req = parse(text_input="Return a list", max_tokens=np.int32(5))
    assert req.params.is_greedy and req.params.max_new_tokens == 5 and not req.stream
    assert req.prompt_ids == TOKENIZER.encode("Return a list")
    sampled = parse(text_input="x", temperature=np.float32(0.7), top_p=np.float32(0.0),
                    seed=np.uint64(3), stream=np.bool_(True))
    assert not sampled.params.is_greedy and sampled.params.top_p == 1.0 and sampled.stream
    assert type(sampled.params.seed) is int and type(sampled.stream) is bool


@pytest.mark.parametrize("inputs, message", [
    ({"text_input": b"\xff"}, "text_input is not valid UTF-8"),
    ({"text_input": "x", "max_tokens": 64}, "must be below the context length 64"),
    ({"text_input": "word " * 70}, "exceeds the context length 64"),
    ({"text_input": "x", "temperature": float("nan")}, "temperature must be a finite number"),
])
def test_bad_values_name_the_input(inputs, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        parse(**inputs)


def test_unknown_parameters_are_refused_and_triton_ones_ignored():
    text = {"text_input": np.array([["x"]], dtype=object)}
    parse_request(text, {"triton_enable_empty_final_response": True}, TOKENIZER, LIMITS)
    with pytest.raises(BadRequest, match="unknown parameter.*beam_width"):
        parse_request(text, {"beam_width": 2}, TOKENIZER, LIMITS)


def test_streamed_text_is_final_text_and_stops_before_the_stop_word():
    ids = TOKENIZER.encode("alpha beta STOPgamma delta")[1:]
    params = SamplingParams(stop_strings=("STOP",))
    stream = TextStream(TOKENIZER, params)
    pieces = [stream.push([t]) for t in ids] + [stream.finish()]
    assert "".join(pieces) == "alpha beta "
    assert all("S" not in p for p in pieces)  # the stop word's prefix was held back


def test_a_split_multibyte_character_is_held_back():
    ids = TOKENIZER.tokenizer.encode("a🙂", add_special_tokens=False).ids  # emoji: 4 byte tokens
    stream = TextStream(TOKENIZER, SamplingParams())
    out = [stream.push([t]) for t in ids]
    assert out == ["a", "", "", "", "🙂"]


def test_bans_block_the_last_token_of_a_bad_word_and_eos_before_min_length():
    req = Request(0, [5, 6, 7], SamplingParams(max_new_tokens=8))
    bans = TokenBans(eos_token_id=1)
    bans.add(0, [[7, 9], [4]], min_tokens=2)
    assert bans.banned(req) == {9, 4, 1}
    chunk = Chunk(req, 0, [5, 6, 7], [0, 1, 2], True)
    logits = bans.apply(torch.zeros(1, 12), [chunk])
    assert torch.isinf(logits[0, [1, 4, 9]]).all() and torch.isfinite(logits[0, 2])
    req.output += [2, 3]
    bans.forget(0)
    assert bans.banned(req) == set()
