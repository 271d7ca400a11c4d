"""What /v1/completions and /v1/chat/completions share: the model check, streaming options,
sampling (OpenAI's fields with generation_config.json's defaults, as vLLM applies them), and
the OpenAI fields this server cannot honour, each refused by name with the reason.

Sampling: `temperature` in [0, 2] (0 is greedy), `top_p` in (0, 1], `seed` in [0, 2^64),
`stop` a string or a list of at most serve/request.py's MAX_WORDS strings of at most
MAX_WORD_BYTES bytes (the Triton path's limits; OpenAI allows 4). A field the request leaves
out takes generation_config.json's value, else OpenAI's default (temperature 1, top_p 1);
top_k is generation_config.json's (OpenAI has none). `max_tokens` left out is the rest of the
context (capped by generation_config.json's `max_new_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.sampling import SamplingParams
from step3_trt.serve.openai.body import Body, kind
from step3_trt.serve.openai.errors import bad_request, unknown_model, unsupported
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.request import MAX_WORD_BYTES, MAX_WORDS

NO_LOGPROBS = ("the AFD job's attention ranks report the sampled token ids only, not their "
               "log-probabilities")
NO_PENALTIES = ("the runtime's presence and frequency penalties count prompt and output tokens "
                "(TensorRT-LLM's rule); OpenAI's count only the tokens sampled so far")


@dataclass(frozen=True)
class Streaming:
    enabled: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None  # None: the rest of the context
    temperature: float | None  # None: generation_config.json's, else 1
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]

    def params(self, prompt_tokens: int, model: ServedModel, prompt_field: str) -> SamplingParams:
        """The runtime's parameters, once the prompt's length is known."""
        limit, defaults = model.limits.max_seq_len, model.defaults
        room = limit - prompt_tokens
        if self.max_tokens is None:
            if room < 1:
                raise bad_request(f"the prompt ({prompt_tokens} tokens) leaves no room for a "
                                  f"completion in the context length {limit}", prompt_field)
            max_tokens = min(room, defaults.max_new_tokens or room)
        elif self.max_tokens > room:
            raise bad_request(f"the prompt ({prompt_tokens} tokens) + max_tokens "
                              f"({self.max_tokens}) exceeds the context length {limit}",
                              "max_tokens")
        else:
            max_tokens = self.max_tokens
        temperature = _first(self.temperature, defaults.temperature, 1.0)
        greedy = temperature == 0
        return SamplingParams(max_new_tokens=max_tokens, greedy=greedy,
                              temperature=1.0 if greedy else temperature,
                              top_k=defaults.top_k or 0,
                              top_p=_first(self.top_p, defaults.top_p, 1.0),
                              seed=self.seed, stop_strings=self.stop)


def _first(*values):
    return next(v for v in values if v is not None)


def check_model(body: Body, model: ServedModel) -> None:
    name = body.string("model", required=True)
    if name != model.name:
        raise unknown_model(name, model.name)


def read_streaming(body: Body) -> Streaming:
    stream = bool(body.boolean("stream"))
    options = body.get("stream_options")
    if options is None:
        return Streaming(stream)
    if not stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(options, dict):
        raise bad_request(f"stream_options must be an object, got {kind(options)}",
                          "stream_options")
    unknown = sorted(set(options) - {"include_usage"})
    if unknown:
        raise bad_request(f"stream_options: unrecognized field(s) {', '.join(unknown)}",
                          "stream_options")
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise bad_request(f"stream_options.include_usage must be true or false, got "
                          f"{kind(usage)}", "stream_options")
    return Streaming(True, bool(usage))


def read_stop(body: Body) -> tuple[str, ...]:
    raw = body.get("stop")
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise bad_request(f"stop must be a string or an array of strings, got {kind(raw)}", "stop")
    if len(items) > MAX_WORDS:
        raise bad_request(f"stop holds {len(items)} entries; at most {MAX_WORDS}", "stop")
    for item in items:
        if not isinstance(item, str):
            raise bad_request(f"stop entries must be strings, got {kind(item)}", "stop")
        if not item:
            raise bad_request("stop entries must not be empty", "stop")
        if len(item.encode()) > MAX_WORD_BYTES:
            raise bad_request(f"stop has an entry of {len(item.encode())} bytes; at most "
                              f"{MAX_WORD_BYTES}", "stop")
    return tuple(items)


def read_max_tokens(body: Body, model: ServedModel, *names: str) -> int | None:
    """The first of `names` that is set (chat: max_completion_tokens, then the older
    max_tokens); setting two different values is an error."""
    limit = model.limits.max_seq_len - 1
    values = {n: v for n in names if (v := body.integer(n, 1, limit)) is not None}
    if len(set(values.values())) > 1:
        raise bad_request(f"{' and '.join(values)} differ; set one of them", names[0])
    return next(iter(values.values()), None)


def read_sampling(body: Body, model: ServedModel, max_tokens: int | None) -> Sampling:
    return Sampling(max_tokens, body.number("temperature", 0.0, 2.0),
                    body.number("top_p", 0.0, 1.0, low_open=True),
                    body.integer("seed", 0, 2 ** 64 - 1), read_stop(body))


def refuse_unsupported(body: Body) -> None:
    """OpenAI fields that only their default value can pass here."""
    n = body.integer("n", 1, 128)
    if n is not None and n != 1:
        raise unsupported("n", "one choice per request (send n requests for n choices)")
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.number(name, -2.0, 2.0)
        if value:
            raise unsupported(name, NO_PENALTIES)
    bias = body.get("logit_bias")
    if bias is not None and bias != {}:
        raise unsupported("logit_bias", "the runtime's sampler takes no per-token biases")
    body.string("user")  # informational, as in OpenAI's API


@dataclass(frozen=True)
class Prompt:
    """A request ready for the AFD job: its prompt tokens and the runtime's parameters."""
    ids: list[int]
    params: SamplingParams


def check_prompt_bytes(size: int, model: ServedModel, max_tokens: int | None,
                       what: str, param: str) -> None:
    """Before tokenizing: a prompt of more bytes than the context can hold is refused
    (serve/request.py's bound: each token stands for at most `token_bytes` bytes)."""
    limits = model.limits
    tokens = max_tokens or 1
    if size > limits.max_prompt_bytes(tokens):
        raise bad_request(f"{what} ({size} bytes) cannot fit in the context length "
                          f"{limits.max_seq_len} with max_tokens {tokens} (a token holds at "
                          f"most {limits.token_bytes} bytes)", param)
