"""Chat prompts: typed messages, tools and tool choice -> the prompt text and token ids, through
the tokenizer's chat template (as `apply_chat_template(..., tokenize=True)` produces them)."""

from __future__ import annotations

from collections.abc import Sequence

from step3_trt.chat.messages import Message, NamedToolChoice, Tool, ToolChoice
from step3_trt.chat.template import ChatError, ChatTemplate
from step3_trt.tokenizer import Step3Tokenizer


class ChatFormat:
    """A tokenizer and its compiled chat template."""

    def __init__(self, tokenizer: Step3Tokenizer):
        self.tokenizer = tokenizer
        self.template = ChatTemplate(tokenizer.chat_templates)

    def render(self, messages: Sequence[Message], tools: Sequence[Tool] = (),
               tool_choice: ToolChoice = "auto", add_generation_prompt: bool = True) -> str:
        """The prompt text. `tools` and `tool_choice` reach the template as `tools` (OpenAI's
        function schemas) and `tool_choice` ("none", "auto", "required" or
        {"type": "function", "function": {"name": ...}})."""
        if not tools and tool_choice not in ("none", "auto"):
            raise ChatError(f"tool_choice {tool_choice!r} needs tools")
        choice = tool_choice.to_template() if isinstance(tool_choice, NamedToolChoice) \
            else tool_choice
        return self.template.render([m.to_template() for m in messages],
                                    special_tokens=self.tokenizer.special_tokens,
                                    tools=[t.to_template() for t in tools] or None,
                                    add_generation_prompt=add_generation_prompt,
                                    tool_choice=choice)

    def encode(self, messages: Sequence[Message], tools: Sequence[Tool] = (),
               tool_choice: ToolChoice = "auto", add_generation_prompt: bool = True) -> list[int]:
        """The prompt's token ids: the rendered text encoded without adding special tokens
        (the template writes BOS itself)."""
        text = self.render(messages, tools, tool_choice, add_generation_prompt)
        return self.tokenizer.encode(text, add_special_tokens=False)
