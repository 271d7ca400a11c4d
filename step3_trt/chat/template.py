"""Chat templates, rendered exactly as `transformers`' `apply_chat_template` renders them.

The same Jinja environment (sandboxed, `trim_blocks`, `lstrip_blocks`, loop controls, a `tojson`
that does not escape HTML, `raise_exception`, `strftime_now`, the `{% generation %}` tag), the
same variables (`messages` with None-valued keys dropped and reasoning aliased, `tools`,
`documents`, `add_generation_prompt`, the tokenizer's named special tokens, then any extra
keyword such as `tool_choice`) and the same choice among named templates (`tool_use` when tools
are given and it exists, else `default`). Tests compare the output with `transformers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_FILE = "chat_template.jinja"  # takes priority over tokenizer_config.json's entry
TEMPLATE_DIR = "additional_chat_templates"  # more named templates, one <name>.jinja each
# Names a message's reasoning may come under; the first is the one templates read.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
STEP3_TEMPLATE = (Path(__file__).with_name("step3.jinja")).read_text(encoding="utf-8")


class ChatError(ValueError):
    """A conversation, tool list or template that cannot be rendered; the message says why."""


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: marks assistant text for training masks in
    transformers; rendering is the body unchanged."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _body(caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes (no reach into Python internals)."""

    def __init__(*args, **kwargs):
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with _")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       dict=lambda *a, **k: dict(*a, **k), namespace=_Namespace)
    return env


def plain(value: Any, where: str = "value") -> Any:
    """`value` rebuilt from JSON types only (what a template may see); anything else is an error
    naming where it was found."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ChatError(f"{where} has a non-string key {k!r}")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ChatError(f"{where} is a {type(value).__name__}, not a JSON value")


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatError(f"messages[{i}] must be an object, got {type(message).__name__}")
        m = plain({k: v for k, v in message.items() if v is not None}, f"messages[{i}]")
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class ChatTemplate:
    """The chat templates of a tokenizer (`{"default": source}` for a single one), compiled once;
    a template that does not compile is refused when loaded."""

    def __init__(self, templates: Mapping[str, str]):
        if not templates:
            raise ChatError("the tokenizer has no chat template")
        self.templates = dict(templates)
        env = _environment()
        self._compiled = {}
        for name, source in self.templates.items():
            try:
                self._compiled[name] = env.from_string(source)
            except jinja2.TemplateSyntaxError as e:
                raise ChatError(f"chat template {name!r} does not compile: {e.message} "
                                f"(line {e.lineno})") from None

    def select(self, tools: Sequence[Any] | None) -> str:
        """The template name transformers picks: `tool_use` when tools are given and it exists,
        else `default` (a lone unnamed template is `default`)."""
        if tools is not None and "tool_use" in self._compiled:
            return "tool_use"
        if "default" in self._compiled:
            return "default"
        raise ChatError(f"chat templates {sorted(self._compiled)}: none is named 'default'")

    def render(self, messages: Sequence[Mapping[str, Any]], *, special_tokens: Mapping[str, str],
               tools: Sequence[Mapping[str, Any]] | None = None,
               add_generation_prompt: bool = False, **variables: Any) -> str:
        """The prompt text. `special_tokens`: the tokenizer's named special tokens (bos_token,
        eos_token, ...); `variables`: extra template variables (e.g. `tool_choice`)."""
        if not messages:
            raise ChatError("the conversation is empty")
        chat = _template_messages(messages)
        context = {**special_tokens, **plain(variables, "template variables")}
        try:
            return self._compiled[self.select(tools)].render(
                messages=chat, tools=plain(tools, "tools"), documents=None,
                add_generation_prompt=add_generation_prompt, **context)
        except jinja2.TemplateError as e:
            raise ChatError(f"chat template: {e.message or type(e).__name__}") from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
            raise ChatError(f"chat template failed on this conversation: {e}") from None


def load_chat_templates(directory: str | Path) -> dict[str, str]:
    """The chat templates of a tokenizer directory, found where transformers looks: template
    files (`chat_template.jinja` as `default`, `additional_chat_templates/<name>.jinja`) when
    there are any, else tokenizer_config.json's `chat_template` (a string, the `default`, or a
    list of {name, template}). Empty if there are none."""
    directory = Path(directory)
    templates: dict[str, str] = {}
    if (directory / TEMPLATE_FILE).is_file():
        templates["default"] = (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    if (directory / TEMPLATE_DIR).is_dir():
        for f in sorted((directory / TEMPLATE_DIR).glob("*.jinja")):
            templates[f.name.removesuffix(".jinja")] = f.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if templates or not config.is_file():
        return templates
    entry = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(entry, str):
        templates["default"] = entry
    elif isinstance(entry, list):
        for item in entry:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("template"), str)):
                raise ChatError(f"{config}: `chat_template` list entries need a `name` and a "
                                f"`template` string")
            templates[item["name"]] = item["template"]
    elif entry is not None:
        raise ChatError(f"{config}: `chat_template` must be a string or a list")
    return templates
