"""/v1/chat/completions: messages (and tools) through the model's chat template -> an assistant
message with its reasoning split off and its tool calls parsed (step3_trt/chat), whole or
streamed.

As `vllm serve --reasoning-parser step3 --tool-call-parser step3 --enable-auto-tool-choice`:
everything before the first `</think>` is `reasoning_content` (Step-3's generation prompt opens
`<think>`); with tools and a tool_choice other than none, calls in Step-3's format become
`tool_calls` and the finish reason `tool_calls`. tool_choice required or a named tool is
rendered into the prompt as the template says; decoding is not constrained to a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from step3_trt.chat.messages import (ImagePart, Message, Tool, ToolChoice, messages_from_openai,
                                     tool_choice_from_openai, tools_from_openai)
from step3_trt.chat.output import AssistantDelta, AssistantStream, parse_assistant
from step3_trt.chat.template import ChatError
from step3_trt.chat.tool_calls import ParsedToolCall
from step3_trt.sampling import SamplingParams
from step3_trt.serve.openai.body import Body
from step3_trt.serve.openai.common import (NO_LOGPROBS, Prompt, Sampling, Streaming,
                                           check_model, check_prompt_bytes, read_max_tokens,
                                           read_sampling, read_streaming, refuse_unsupported)
from step3_trt.serve.openai.envelope import Envelope
from step3_trt.serve.openai.errors import bad_request, unsupported
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.openai.output import OutputText

OBJECT, CHUNK = "chat.completion", "chat.completion.chunk"


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    tool_choice: ToolChoice
    sampling: Sampling
    streaming: Streaming

    @property
    def parsed_tools(self) -> tuple[Tool, ...] | None:
        """The tools whose calls are parsed in the output (None: the output is plain text)."""
        return self.tools if self.tools and self.tool_choice != "none" else None


def _chat_field(param: str, read):
    try:
        return read()
    except ChatError as e:
        raise bad_request(str(e), param) from None


def parse_chat(raw: Any, model: ServedModel) -> ChatRequest:
    """Every field checked; the prompt is rendered and tokenized later (`chat_prompt`)."""
    body = Body(raw)
    check_model(body, model)
    if model.chat is None:
        raise bad_request(f"the model {model.name!r} has no chat template (tokenizer_config.json "
                          f"`chat_template`); use /v1/completions", "messages")
    streaming = read_streaming(body)
    max_tokens = read_max_tokens(body, model, "max_completion_tokens", "max_tokens")
    sampling = read_sampling(body, model, max_tokens)
    refuse_unsupported(body)
    if body.boolean("logprobs"):
        raise unsupported("logprobs", NO_LOGPROBS)
    if body.get("top_logprobs") is not None:
        raise unsupported("top_logprobs", NO_LOGPROBS)
    if body.boolean("parallel_tool_calls") is False:
        raise unsupported("parallel_tool_calls", "false would need constrained decoding; every "
                          "call the model writes is returned")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise unsupported("response_format", "only {\"type\": \"text\"} (no constrained "
                          "decoding)")
    messages = _chat_field("messages", lambda: messages_from_openai(body.get("messages")))
    if any(isinstance(p, ImagePart) for m in messages if isinstance(m.content, tuple)
           for p in m.content):
        raise unsupported("messages", "image parts (the AFD job serves the text model only)")
    tools = _chat_field("tools", lambda: tools_from_openai(body.get("tools")))
    choice = _chat_field("tool_choice",
                         lambda: tool_choice_from_openai(body.get("tool_choice"), tools))
    body.finish()
    return ChatRequest(messages, tools, choice, sampling, streaming)


def chat_prompt(request: ChatRequest, model: ServedModel) -> Prompt:
    """On an admission lane: render the template, bound its bytes, then tokenize it without
    adding special tokens (the template writes BOS), as ChatFormat.encode does, through the
    tokenizer's batch call, which releases the GIL (serve/request.encode_prompt says why)."""
    text = _chat_field("messages", lambda: model.chat.render(
        request.messages, request.tools, request.tool_choice))
    check_prompt_bytes(len(text.encode()), model, request.sampling.max_tokens,
                       "the rendered prompt", "messages")
    ids = model.tokenizer.tokenizer.encode_batch([text], add_special_tokens=False)[0].ids
    return Prompt(ids, request.sampling.params(len(ids), model, "messages"))


def output_text(model: ServedModel, params: SamplingParams, request: ChatRequest) -> OutputText:
    """Special tokens stay in the text when tool calls are parsed (their delimiters are)."""
    return OutputText(model, params, keep_special_tokens=request.parsed_tools is not None)


def finish_reason(reason: str, calls: int) -> str:
    return "tool_calls" if calls and reason == "stop" else reason


class ToolCallIds:
    """OpenAI ids for the calls of one response, numbered in output order."""

    def __init__(self, envelope: Envelope):
        self.base, self.count = envelope.id.split("-", 1)[-1][:16], 0

    def json(self, call: ParsedToolCall, streamed: bool) -> dict[str, Any]:
        out = {"index": self.count} if streamed else {}
        out.update(id=f"call_{self.base}_{self.count}", type="function",
                   function={"name": call.name, "arguments": call.arguments_json})
        self.count += 1
        return out


def chat_body(envelope: Envelope, text: str, request: ChatRequest, reason: str,
              usage: dict[str, int]) -> dict[str, Any]:
    out = parse_assistant(text, reasoning=True, tools=request.parsed_tools)
    ids = ToolCallIds(envelope)
    message: dict[str, Any] = {"role": "assistant", "content": out.content,
                               "reasoning_content": out.reasoning_content or None}
    if out.tool_calls:
        message["tool_calls"] = [ids.json(c, streamed=False) for c in out.tool_calls]
    return envelope.make(OBJECT, choices=[{"index": 0, "message": message, "logprobs": None,
                                           "finish_reason": finish_reason(reason, ids.count)}],
                         usage=usage)


class ChatStream:
    """Output tokens -> the `delta` objects of chat.completion.chunk's, in order."""

    def __init__(self, model: ServedModel, params: SamplingParams, request: ChatRequest,
                 envelope: Envelope):
        self.text = output_text(model, params, request)
        self.parser = AssistantStream(reasoning=True, tools=request.parsed_tools)
        self.ids = ToolCallIds(envelope)

    def push(self, ids: list[int]) -> list[dict[str, Any]]:
        return self._deltas([self.parser.feed(self.text.push(ids))])

    def finish(self, output_ids: list[int]) -> list[dict[str, Any]]:
        return self._deltas([self.parser.feed(self.text.finish(output_ids)),
                             self.parser.finish()])

    @property
    def calls(self) -> int:
        return self.ids.count

    def _deltas(self, parts: list[AssistantDelta]) -> list[dict[str, Any]]:
        out = []
        for part in parts:
            delta: dict[str, Any] = {}
            if part.reasoning:
                delta["reasoning_content"] = part.reasoning
            if part.content:
                delta["content"] = part.content
            if part.calls:
                delta["tool_calls"] = [self.ids.json(c, streamed=True) for c in part.calls]
            if delta:
                out.append(delta)
        return out


def chunk(envelope: Envelope, delta: dict[str, Any], reason: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return envelope.make(CHUNK, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": reason}], **extra)
