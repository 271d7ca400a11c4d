"""The backend's pure parts without a server: request parsing, streaming detokenization with
stop words, the bad_words / min_length bans the attention ranks apply, the ranks' idle backoff,
and the backend's job client against a stand-in coordinator that goes away and comes back."""

import json
import queue
import threading
import time

import numpy as np
import pytest

from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.runtime.transport import base as transport
from step3_trt.sampling import SamplingParams
from step3_trt.serve.detok import TextStream
from step3_trt.serve.job_client import JobClient, JobUnavailable
from step3_trt.serve.request import BadRequest, Limits, parse_request
from step3_trt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
LIMITS = Limits.of(TOKENIZER, 64)


def parse(**inputs):
    arrays = {k: np.array([[v]], dtype=object if isinstance(v, (str, bytes)) else None)
              for k, v in inputs.items()}
    return parse_request(arrays, {}, TOKENIZER, LIMITS)


def test_defaults_are_greedy_and_values_are_plain_python():
    req = parse(text_input="Return a list", max_tokens=np.int32(5))
    assert req.params.is_greedy and req.params.max_new_tokens == 5 and not req.stream
    assert req.prompt_ids == TOKENIZER.encode("Return a list")
    # TensorRT-LLM's rule: a temperature alone decodes greedily; top_k > 1 samples (top_p 0 = 1)
    assert parse(text_input="x", temperature=np.float32(0.7)).params.is_greedy
    sampled = parse(text_input="x", temperature=np.float32(0.7), top_k=np.int32(40),
                    top_p=np.float32(0.0), seed=np.uint64(3), stream=np.bool_(True))
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


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_backoff_is_fast_while_a_wait_is_young_and_sleeps_longer_when_idle(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(transport, "time", clock)
    backoff, pauses = transport.Backoff(), []
    while clock.now < 5.0:
        pauses.append((clock.now, backoff.pause))
        backoff.sleep()
    young = [p for t, p in pauses if t < 0.1]
    assert young[0] == 1e-5 and max(young) == transport.FAST_PAUSE_S
    assert all(p <= max(transport.FAST_PAUSE_S, 0.02 * t) + 1e-12 for t, p in pauses)
    assert max(p for _, p in pauses) == transport.IDLE_PAUSE_S
    assert len(pauses) < 5.0 / transport.IDLE_PAUSE_S + 150  # ~200 wake-ups a second idle
    assert transport.Backoff().pause == 1e-5  # the next wait starts fast again


class FakeCoordinator:
    """A ZeroMQ ROUTER on the job's endpoint that answers hello and records requests."""

    def __init__(self, endpoint: str):
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.bind(endpoint)

    def expect(self, kind: str, timeout_ms: int = 10000) -> tuple[bytes, dict]:
        """The next message of type `kind` (answering any hello on the way)."""
        while self.socket.poll(timeout_ms):
            client, payload = self.socket.recv_multipart()
            msg = json.loads(payload)
            if msg["type"] == "hello":
                self.send(client, {"type": "status", "ready": True})
            if msg["type"] == kind:
                return client, msg
        raise AssertionError(f"no {kind!r} message")

    def send(self, client: bytes, msg: dict) -> None:
        self.socket.send_multipart([client, json.dumps(msg).encode()])

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


class Recorder:
    def __init__(self):
        self.results: queue.Queue = queue.Queue()

    def on_tokens(self, tokens):
        pass

    def on_finished(self, result):
        self.results.put(result)

    def is_cancelled(self):
        return False


def submit_when_up(client: JobClient, request, handler, timeout_s: float = 10) -> int:
    """The client takes the restarted coordinator's status a moment after its hello."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit(request, handler)
        except JobUnavailable:
            assert time.monotonic() < deadline, "the client did not reconnect"
            time.sleep(0.05)


def test_job_client_fails_in_flight_refuses_while_restarting_and_reconnects(tmp_path):
    endpoint = f"ipc://{tmp_path}/afd.sock"
    request = parse(text_input="Return a list", max_tokens=np.int32(3))
    first = FakeCoordinator(endpoint)
    hello = threading.Thread(target=first.expect, args=("hello",))
    hello.start()
    ups, downs = [], []
    client = JobClient(endpoint, 10, 30, on_up=lambda: ups.append(1), on_down=downs.append)
    hello.join()
    second = None
    try:
        in_flight = Recorder()
        client.submit(request, in_flight)
        first.expect("request")
        first.close()  # the job dies with a request in flight
        lost = "the AFD job stopped: its coordinator disconnected"
        assert in_flight.results.get(timeout=10)["error"] == lost and downs == [lost]
        with pytest.raises(JobUnavailable, match=r"^the AFD job is restarting after a failure "
                                                 r"\(the AFD job stopped.*\); retry later$"):
            client.submit(request, Recorder())
        second = FakeCoordinator(endpoint)  # the restarted job
        second.expect("hello")
        done = Recorder()
        rid = submit_when_up(client, request, done)
        coordinator_side, msg = second.expect("request")
        assert msg["id"] == rid and msg["prompt_ids"] == request.prompt_ids
        second.send(coordinator_side, {"type": "update", "tokens": [], "finished": [
            {"id": rid, "output_ids": [1, 2, 3], "finish_reason": "length"}]})
        assert done.results.get(timeout=10)["output_ids"] == [1, 2, 3] and ups == [1]
    finally:
        client.close()
        if second is not None:
            second.close()
