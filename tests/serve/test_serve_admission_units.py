"""Request checks before tokenization (byte bound, word-list caps, typed integers), tokenizing
with the GIL released, the admission lanes, and the admin key's tritonserver options."""

import threading

import numpy as np
import pytest

from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.serve.admission import FAST_LANE_CHARS, Admission
from step3_trt.serve.lockdown import HEADER, AdminKey
from step3_trt.serve.request import MAX_WORDS, BadRequest, Limits, check_request, \
    encode_prompt, longest_token_bytes, tokenize
from step3_trt.serve.server_process import describe_exit
from step3_trt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
LIMITS = Limits.of(TOKENIZER, 64)


def inputs(**values):
    return {k: np.array([[v]], dtype=object if isinstance(v, (str, bytes)) else None)
            for k, v in values.items()}


@pytest.mark.parametrize("text", ["Return a new list", "é🙂 café\n\t", "  spaces  ", "x" * 300,
                                  "<｜begin▁of▁sentence｜>inside"])
def test_encoding_off_the_gil_gives_the_tokenizers_ids(text):
    assert encode_prompt(TOKENIZER, text) == TOKENIZER.encode(text)


def test_no_token_stands_for_more_bytes_than_the_bound():
    bound = longest_token_bytes(TOKENIZER)
    vocab = TOKENIZER.tokenizer.get_vocab_size(with_added_tokens=True)
    longest = max(range(vocab), key=lambda i: len(TOKENIZER.tokenizer.decode([i]).encode()))
    text = TOKENIZER.tokenizer.decode([longest])
    assert len(text.encode()) == bound
    # a prompt at the byte bound made of the longest token still fits the context
    fitting = text * (LIMITS.max_prompt_bytes(4) // bound)
    assert len(encode_prompt(TOKENIZER, fitting)) <= 64 - 4 + 1


def test_a_prompt_past_the_byte_bound_is_refused_before_tokenizing():
    limit = LIMITS.max_prompt_bytes(4)
    assert check_request(inputs(text_input="a" * limit, max_tokens=np.int32(4)), {}, LIMITS)
    with pytest.raises(BadRequest, match=rf"^text_input \({limit + 1} bytes\) cannot fit in the "
                                         rf"context length 64 with max_tokens 4"):
        check_request(inputs(text_input=b"a" * (limit + 1), max_tokens=np.int32(4)), {}, LIMITS)


def test_word_lists_are_capped_before_decoding():
    many = {"text_input": np.array([["x"]], object),
            "stop_words": np.array([["s"] * (MAX_WORDS + 1)], object)}
    with pytest.raises(BadRequest, match=f"stop_words holds {MAX_WORDS + 1} entries"):
        check_request(many, {}, LIMITS)
    checked = check_request({"text_input": np.array([["x"]], object),
                             "bad_words": np.array([[b"", "ab", b"\xc3\xa9"]], object)}, {},
                            LIMITS)
    assert checked.bad_words == ["ab", "é"]  # [""] means none, as TensorRT-LLM clients send it
    with pytest.raises(BadRequest, match="bad_words is not valid UTF-8"):
        check_request({"text_input": np.array([["x"]], object),
                       "bad_words": np.array([[b"\xff"]], object)}, {}, LIMITS)


@pytest.mark.parametrize("name, value, message", [
    ("max_tokens", 2.5, "max_tokens must be an integer, got 2.5"),
    ("max_tokens", True, "max_tokens must be an integer"),
    ("top_k", "3", "top_k must be an integer"),
    ("temperature", "hot", "temperature must be a number"),
    ("seed", -1, r"seed must be in \[0, 2\^64\)"),
    ("text_input", 7, "text_input must be a string"),
])
def test_values_of_the_wrong_type_name_the_input(name, value, message):
    values = {"text_input": "x", name: value}
    arrays = {k: np.array([[v]], dtype=object) for k, v in values.items()}
    with pytest.raises(BadRequest, match=message):
        check_request(arrays, {}, LIMITS)


def test_tokenize_refuses_a_prompt_that_fills_the_context():
    checked = check_request(inputs(text_input="word " * 60, max_tokens=np.int32(8)), {}, LIMITS)
    with pytest.raises(BadRequest, match=r"prompt \(\d+ tokens\) \+ max_tokens \(8\) exceeds"):
        tokenize(checked, TOKENIZER, LIMITS)


def test_a_blocked_bulk_lane_does_not_hold_up_the_fast_lane():
    admission = Admission()
    release, bulk_done, fast_done = threading.Event(), threading.Event(), threading.Event()
    try:
        for _ in range(4):  # more long prompts than the bulk lane has threads
            admission.submit(FAST_LANE_CHARS + 1, lambda: release.wait(60) and bulk_done.set())
        admission.submit(10, fast_done.set)
        assert fast_done.wait(60) and not bulk_done.is_set()
    finally:
        release.set()
        admission.close()
    assert bulk_done.is_set()


def test_the_admin_key_is_random_hidden_and_passed_to_both_protocols():
    key = AdminKey()
    assert key != AdminKey() and len(key.value) == 64
    assert key.value not in repr(key)
    assert key.headers() == {HEADER: key.value}
    apis = "model-repository,shared-memory,logging,trace"
    assert key.server_args() == [f"--http-restricted-api={apis}:{HEADER}={key.value}",
                                 f"--grpc-restricted-protocol={apis}:{HEADER}={key.value}"]


def test_exits_are_described_by_signal_name():
    assert describe_exit(-11) == "was killed by signal 11 (SIGSEGV)"
    assert describe_exit(1) == "exited with code 1"
