"""Typed chat inputs: messages, tools and the tool choice, read from OpenAI-shaped JSON (every
error one line naming the field) and written as the dicts chat templates read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from step3_trt.chat.template import ChatError

Role = Literal["system", "user", "assistant", "tool"]
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    url: str  # an http(s) or data: URL, as OpenAI's image_url carries it


ContentPart = Union[TextPart, ImagePart]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]  # a JSON object
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_template(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Message:
    role: Role
    content: str | tuple[ContentPart, ...] | None = None
    reasoning_content: str | None = None  # assistant turns only; the template may drop it
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns only
    tool_call_id: str | None = None  # tool turns only: the call this result answers
    name: str | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ChatError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.tool_calls and self.role != "assistant":
            raise ChatError(f"only assistant messages have tool_calls, not {self.role}")
        if self.reasoning_content is not None and self.role != "assistant":
            raise ChatError(f"only assistant messages have reasoning_content, not {self.role}")
        if isinstance(self.content, tuple) and any(isinstance(p, ImagePart) for p in self.content) \
                and self.role != "user":
            raise ChatError(f"only user messages may hold images, not {self.role}")

    def to_template(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, tuple):
            content = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else
                       {"type": "image_url", "image_url": {"url": p.url}} for p in content]
        return {"role": self.role, "content": content, "reasoning_content": self.reasoning_content,
                "tool_calls": [c.to_template() for c in self.tool_calls] or None,
                "tool_call_id": self.tool_call_id, "name": self.name}


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object",
                                                                "properties": {}})
    description: str | None = None

    def to_template(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}

    def parameter_schema(self, name: str) -> dict[str, Any] | None:
        """The JSON schema of parameter `name`, or None if the tool does not declare it."""
        schema = self.parameters.get("properties", {}).get(name)
        return schema if isinstance(schema, dict) else None


@dataclass(frozen=True)
class NamedToolChoice:
    name: str

    def to_template(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name}}


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


# ---- OpenAI JSON -> typed -------------------------------------------------------------------
def _string(value: Any, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ChatError(f"{where} must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _content(raw: Any, role: str, where: str) -> str | tuple[ContentPart, ...] | None:
    if raw is None:
        if role == "assistant":
            return None
        raise ChatError(f"{where} is required for {role} messages")
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise ChatError(f"{where} must be a string or a list of parts, got {_kind(raw)}")
    parts: list[ContentPart] = []
    for i, part in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise ChatError(f"{at} must be an object, got {_kind(part)}")
        kind = part.get("type")
        if kind == "text":
            parts.append(TextPart(_string(part.get("text"), f"{at}.text")))
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(ImagePart(_string(url, f"{at}.image_url.url")))
        else:
            raise ChatError(f"{at}.type {kind!r} is not supported in {role} messages "
                            f"(text{', image_url' if role == 'user' else ''})")
    return tuple(parts)


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict):
        raise ChatError(f"{where} must be an object, got {_kind(raw)}")
    if raw.get("type", "function") != "function":
        raise ChatError(f"{where}.type must be 'function', got {raw.get('type')!r}")
    function = raw.get("function")
    if not isinstance(function, dict):
        raise ChatError(f"{where}.function must be an object, got {_kind(function)}")
    name = _string(function.get("name"), f"{where}.function.name")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ChatError(f"{where}.function.arguments is not valid JSON: {e.msg} "
                            f"(char {e.pos})") from None
    if not isinstance(arguments, dict):
        raise ChatError(f"{where}.function.arguments must be a JSON object, "
                        f"got {_kind(arguments)}")
    return ToolCall(name, arguments, _string(raw.get("id"), f"{where}.id", optional=True))


def message_from_openai(raw: Any, where: str = "message") -> Message:
    """One OpenAI chat message; `developer` is read as `system` (OpenAI's newer name)."""
    if not isinstance(raw, dict):
        raise ChatError(f"{where} must be an object, got {_kind(raw)}")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise ChatError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    calls = raw.get("tool_calls") or []
    if role != "assistant" and calls:
        raise ChatError(f"{where}.tool_calls: only assistant messages have tool calls")
    if not isinstance(calls, list):
        raise ChatError(f"{where}.tool_calls must be a list, got {_kind(calls)}")
    content = _content(raw.get("content"), role, f"{where}.content")
    if role == "assistant" and content is None and not calls:
        raise ChatError(f"{where} needs content or tool_calls")
    reasoning = raw.get("reasoning_content") if role == "assistant" else None
    tool_call_id = raw.get("tool_call_id") if role == "tool" else None
    if role == "tool" and tool_call_id is None:
        raise ChatError(f"{where}.tool_call_id is required for tool messages")
    return Message(role, content,
                   reasoning_content=_string(reasoning, f"{where}.reasoning_content", True),
                   tool_calls=tuple(_tool_call(c, f"{where}.tool_calls[{i}]")
                                    for i, c in enumerate(calls)),
                   tool_call_id=_string(tool_call_id, f"{where}.tool_call_id", True),
                   name=_string(raw.get("name"), f"{where}.name", True))


def messages_from_openai(raw: Any) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise ChatError("messages must be a non-empty list")
    return tuple(message_from_openai(m, f"messages[{i}]") for i, m in enumerate(raw))


def tools_from_openai(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ChatError(f"tools must be a list, got {_kind(raw)}")
    tools = []
    for i, t in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            raise ChatError(f"{where} must be an object with type 'function'")
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise ChatError(f"{where}.function must be an object, got {_kind(fn)}")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ChatError(f"{where}.function.parameters must be a JSON schema object")
        if not isinstance(params.get("properties", {}), dict):
            raise ChatError(f"{where}.function.parameters.properties must be an object")
        tools.append(Tool(_string(fn.get("name"), f"{where}.function.name"), params,
                          _string(fn.get("description"), f"{where}.function.description", True)))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ChatError(f"tools: a function name appears twice in {names}")
    return tuple(tools)


def tool_choice_from_openai(raw: Any, tools: Sequence[Tool]) -> ToolChoice:
    """OpenAI's `tool_choice`: none, auto, required or {type: function, function: {name}};
    absent means auto with tools and none without, as OpenAI defines it."""
    if raw is None:
        return "auto" if tools else "none"
    if raw in ("none", "auto", "required"):
        choice: ToolChoice = raw
    elif isinstance(raw, Mapping) and raw.get("type") == "function" and \
            isinstance(raw.get("function"), Mapping):
        choice = NamedToolChoice(_string(raw["function"].get("name"),
                                         "tool_choice.function.name"))
    else:
        raise ChatError(f"tool_choice must be none, auto, required or "
                        f"{{type: function, function: {{name}}}}, got {raw!r}")
    if choice != "none" and choice != "auto" and not tools:
        raise ChatError(f"tool_choice {raw!r} needs tools")
    if isinstance(choice, NamedToolChoice) and choice.name not in {t.name for t in tools}:
        raise ChatError(f"tool_choice names {choice.name!r}, which is not among the tools")
    return choice
