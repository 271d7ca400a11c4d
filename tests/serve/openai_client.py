"""The official `openai` client on the test server, and what the chat reference expects."""

from __future__ import annotations

from step3_trt.chat.messages import messages_from_openai, tool_choice_from_openai, \
    tools_from_openai
from step3_trt.chat.output import AssistantOutput, parse_assistant
from step3_trt.chat.prompt import ChatFormat
from step3_trt.generation_config import GenerationConfig
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
CHAT = ChatFormat(TOKENIZER)
EOS = frozenset(GenerationConfig.from_dir(DEFAULT_CHECKPOINT,
                                          CheckpointReader(DEFAULT_CHECKPOINT).config)
                .eos_token_ids)


def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.openai_url}/v1", api_key="unused", max_retries=0,
                  timeout=300)


def chat_prompt_ids(messages: list[dict], tools: list[dict] | None = None,
                    tool_choice=None) -> list[int]:
    """The prompt ids `transformers`' apply_chat_template gives (tests/chat checks the template
    renders the same), from the OpenAI-shaped request."""
    typed_tools = tools_from_openai(tools)
    return CHAT.encode(messages_from_openai(messages), typed_tools,
                       tool_choice_from_openai(tool_choice, typed_tools))


def expected_reply(ids: list[int], tools: list[dict] | None = None) -> AssistantOutput:
    """What the server must make of the reference's output ids: the text without the
    end-of-sequence id, reasoning split at `</think>`, tool calls parsed."""
    text = TOKENIZER.decode([t for t in ids if t not in EOS],
                            skip_special_tokens=tools is None)
    return parse_assistant(text, reasoning=True,
                           tools=tools_from_openai(tools) if tools else None)
