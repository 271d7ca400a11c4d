"""Where generation stops, and the sampling defaults a checkpoint ships: one typed reader.

`eos_token_ids` is the union, in this order without repeats, of
1. `eos_token_id` of config.json (one id or a list; `Step3Config.eos_token_ids`),
2. `eos_token_id` of generation_config.json (one id or a list; what transformers' `generate`
   stops on),
3. the tokenizer's `eos_token` (vLLM stops on it as well),
4. the chat template's end of turn, `<|EOT|>`, when the tokenizer has it as one token (an
   assistant turn ends there; a chat reply must not run past it).
The sampling fields are what generation_config.json says (None where it says nothing), so a
server can apply exactly the defaults the file sets, as vLLM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from step3_trt.chat.tokens import END_OF_TURN
from step3_trt.config import ConfigError, Step3Config, parse_token_ids
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer

if TYPE_CHECKING:  # sampling imports torch; reading the config does not need it
    from step3_trt.sampling import SamplingParams

GENERATION_CONFIG_FILE = "generation_config.json"


class GenerationConfigError(ValueError):
    """A generation_config.json that is malformed; the message names the file and field."""


@dataclass(frozen=True)
class GenerationConfig:
    eos_token_ids: tuple[int, ...]  # the union described in the module docstring
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    repetition_penalty: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dir(cls, path: str | Path, config: Step3Config) -> "GenerationConfig":
        """`path`: a checkpoint directory, or a role-checkpoint / engine directory whose
        `tokenizer/` holds the files copied from the checkpoint. `config`: the model's config
        (a checkpoint's config.json, an engine's architecture)."""
        path = Path(path)
        files = path / "tokenizer" if (path / "tokenizer").is_dir() else path
        raw = _read(files / GENERATION_CONFIG_FILE)
        tokenizer = load_tokenizer(path)
        try:
            return cls.from_parts(raw, config, tokenizer)
        except (ConfigError, GenerationConfigError) as e:
            raise GenerationConfigError(f"{files / GENERATION_CONFIG_FILE}: {e}") from None

    @classmethod
    def from_parts(cls, raw: dict[str, Any], config: Step3Config,
                   tokenizer: Step3Tokenizer | None) -> "GenerationConfig":
        """From generation_config.json's content (empty when there is none), the model config
        and the tokenizer (None when there is none)."""
        file_ids = parse_token_ids("eos_token_id", raw.get("eos_token_id"))
        tokenizer_ids = () if tokenizer is None else tuple(
            i for i in (tokenizer.eos_token_id, tokenizer.token_id(END_OF_TURN)) if i is not None)
        union = tuple(dict.fromkeys((*config.eos_token_ids, *file_ids, *tokenizer_ids)))
        bad = [i for i in union if i >= config.vocab_size]
        if bad:
            raise GenerationConfigError(f"`eos_token_id` {bad} must be < the model's vocab_size "
                                        f"({config.vocab_size})")
        known = {"eos_token_id", "bos_token_id", "pad_token_id", "do_sample", "temperature",
                 "top_p", "top_k", "max_new_tokens", "max_length", "repetition_penalty"}
        out = cls(union,
                  bos_token_id=_int(raw, "bos_token_id", 0),
                  pad_token_id=_int(raw, "pad_token_id", 0),
                  do_sample=_bool(raw, "do_sample"),
                  temperature=_number(raw, "temperature", lambda v: v >= 0, ">= 0"),
                  top_p=_number(raw, "top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
                  top_k=_int(raw, "top_k", 0),
                  max_new_tokens=_int(raw, "max_new_tokens", 1),
                  max_length=_int(raw, "max_length", 1),
                  repetition_penalty=_number(raw, "repetition_penalty", lambda v: v > 0, "> 0"),
                  extra={k: v for k, v in raw.items() if k not in known})
        return out

    def with_stops(self, params: SamplingParams) -> SamplingParams:
        """`params` that also stop on every id of `eos_token_ids`."""
        return replace(params, stop_token_ids=tuple(dict.fromkeys(
            (*params.stop_token_ids, *self.eos_token_ids))))


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise GenerationConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise GenerationConfigError(f"{path} must hold a JSON object")
    return raw


def _int(raw: dict[str, Any], name: str, minimum: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenerationConfigError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(raw: dict[str, Any], name: str) -> bool | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, bool):
        raise GenerationConfigError(f"`{name}` must be true or false, got {value!r}")
    return value


def _number(raw: dict[str, Any], name: str, ok, rule: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise GenerationConfigError(f"`{name}` must be a number {rule}, got {value!r}")
    return float(value)
