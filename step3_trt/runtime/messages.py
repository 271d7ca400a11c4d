"""Control-plane messages of an AFD job, typed: one dataclass per message, JSON on the wire
(never pickle), and one `decode` that refuses unknown or malformed messages with a clear error.

Client (Triton backend, `step3-trt run`) <-> coordinator, over ZeroMQ:
  Hello -> Status;  Submit (`request`), Cancel, Shutdown -> Update (token deltas, results),
  Heartbeat (every attention rank's occupancy), ErrorReply.
Coordinator <-> attention ranks, over the control channel:
  Submit, Cancel, Shutdown ->;  <- Ready, StepReport (deltas, results, occupancy).
Workers among themselves: Round (the leader -> each attention rank: vote now), Vote (attention
rank -> the leader), Decision (leader -> every worker: run a step, stay idle, or stop), Nudge (an
idle attention rank -> the leader: start a round); to the coordinator: Ready (once its engines load; the
coordinator answers Begin once every worker is ready), Stalled (a
wait on a peer has lasted the job's timeout).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from step3_trt.sampling import SamplingParams


class MessageError(ValueError):
    """A control message that is not one this job understands; the text says what is wrong."""


@dataclass(frozen=True)
class Submit:
    """A generation request (`type: request` on the wire, the TensorRT-LLM-style inputs)."""
    TYPE: ClassVar[str] = "request"
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool = False
    bad_words: list[list[int]] = field(default_factory=list)  # token sequences never to complete
    min_tokens: int = 0  # no end-of-sequence or stop token before this many outputs


@dataclass(frozen=True)
class Cancel:
    TYPE: ClassVar[str] = "cancel"
    id: int


@dataclass(frozen=True)
class Shutdown:
    TYPE: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[str] = "hello"


@dataclass(frozen=True)
class Status:
    TYPE: ClassVar[str] = "status"
    ready: bool
    attention_ranks: int
    ffn_ranks: int


@dataclass(frozen=True)
class Ready:
    TYPE: ClassVar[str] = "ready"


@dataclass(frozen=True)
class Begin:
    """Coordinator -> every worker, once all have reported ready: start serving."""
    TYPE: ClassVar[str] = "begin"


@dataclass(frozen=True)
class Result:
    """How a request ended: its outputs and finish reason, or an error (then no outputs)."""
    id: int
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # stop | length | cancelled
    preemptions: int = 0
    error: str | None = None
    served_by: str | None = None  # the attention rank (set by the coordinator)
    # prompt tokens whose K/V came from the rank's prefix cache when the request was first
    # scheduled (TensorRT-LLM reports kv_cache_reused_blocks = cached_tokens / block size)
    cached_tokens: int = 0


@dataclass(frozen=True)
class RankStats:
    running: int
    waiting: int
    kv_blocks_used: int  # referenced by a request
    kv_blocks_total: int
    kv_blocks_cached: int = 0  # holding a prefix that a request can reuse (referenced or not)
    # cumulative since the rank started: tokens looked up in the prefix cache (each admission),
    # tokens found there, and tokens computed other than decoding a request's newest token
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    prefill_tokens: int = 0


@dataclass(frozen=True)
class StepReport:
    """An attention rank's report after a step (or a batch of control messages when idle)."""
    TYPE: ClassVar[str] = "step"
    tokens: list[tuple[int, list[int]]]  # new output tokens of streaming requests
    finished: list[Result]
    stats: RankStats


@dataclass(frozen=True)
class Update:
    """Coordinator -> one client: its requests' token deltas and results (client ids)."""
    TYPE: ClassVar[str] = "update"
    tokens: list[tuple[int, list[int]]]
    finished: list[Result]


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    stats: dict[str, RankStats]
    in_flight: int


@dataclass(frozen=True)
class ErrorReply:
    """Coordinator -> client: a message it could not take (`id` when it names a request)."""
    TYPE: ClassVar[str] = "error"
    error: str
    id: int | None = None


@dataclass(frozen=True)
class Round:
    """The leader -> each other attention rank: a round starts, send your vote."""
    TYPE: ClassVar[str] = "round"


@dataclass(frozen=True)
class Nudge:
    """An idle attention rank -> the leader: something changed here (a request, a cancel, a
    shutdown), start a round."""
    TYPE: ClassVar[str] = "nudge"


@dataclass(frozen=True)
class Vote:
    TYPE: ClassVar[str] = "vote"
    has_work: bool
    stopping: bool


@dataclass(frozen=True)
class Decision:
    TYPE: ClassVar[str] = "decision"
    action: str  # STEP | IDLE | STOP

    STEP: ClassVar[str] = "step"
    IDLE: ClassVar[str] = "idle"
    STOP: ClassVar[str] = "stop"

    def __post_init__(self):
        if self.action not in (self.STEP, self.IDLE, self.STOP):
            raise MessageError(f"decision action must be step, idle or stop, got {self.action!r}")


@dataclass(frozen=True)
class Stalled:
    """A worker -> coordinator: it has waited `seconds` for `what` from MPI rank `peer` and
    waits on; the coordinator finds the rank everyone waits on (runtime/afd/stalls.py)."""
    TYPE: ClassVar[str] = "stalled"
    peer: int
    what: str
    seconds: float


Message = typing.Union[Submit, Cancel, Shutdown, Hello, Status, Ready, Begin, StepReport, Update,
                       Heartbeat, ErrorReply, Round, Nudge, Vote, Decision, Stalled]
MESSAGES: dict[str, type] = {cls.TYPE: cls for cls in typing.get_args(Message)}
MAX_ID = 2**63 - 1  # ids are JSON integers that fit int64


def encode(msg) -> bytes:
    return json.dumps({"type": msg.TYPE, **_plain(msg)}, separators=(",", ":")).encode()


def decode(data: bytes | str | dict, expect: tuple[type, ...] | None = None):
    """The message in `data`, validated field by field; `expect`: the message types this
    receiver takes (anything else is refused)."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise MessageError(f"not a JSON message: {e}") from None
    if not isinstance(data, dict):
        raise MessageError(f"a message is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}")
    if expect is not None and cls not in expect:
        names = ", ".join(sorted(c.TYPE for c in expect))
        raise MessageError(f"unexpected message type {kind!r} here (expected {names})")
    return _build(cls, {k: v for k, v in data.items() if k != "type"}, kind)


def _plain(obj) -> dict:
    """A dataclass as JSON-ready fields; optional fields that are None are left out."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        out[f.name] = _plain_value(value)
    return out


def _plain_value(value):
    if dataclasses.is_dataclass(value):
        return _plain(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def _build(cls, raw: dict, path: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise MessageError(f"{path}: unknown field(s) {', '.join(unknown)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{path}: missing field {name!r}")
            continue
        values[name] = _value(hints[name], raw[name], f"{path}.{name}")
    try:
        return cls(**values)
    except MessageError:
        raise
    except (TypeError, ValueError) as e:
        raise MessageError(f"{path}: {e}") from None


def _value(hint, value: Any, path: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, path)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise MessageError(f"{path} must be an object, got {_kind(value)}")
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{path} must be true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{path} must be an integer, got {_kind(value)}")
        if not -MAX_ID - 1 <= value <= 2**64 - 1:
            raise MessageError(f"{path} is out of range: {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{path} must be a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MessageError(f"{path} must be a string, got {_kind(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise MessageError(f"{path} must be a list, got {_kind(value)}")
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):  # fixed-size tuple
            if len(value) != len(args):
                raise MessageError(f"{path} must have {len(args)} items, got {len(value)}")
            return tuple(_value(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0]
        out = [_value(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{path} must be an object, got {_kind(value)}")
        return {_value(args[0], k, path): _value(args[1], v, f"{path}.{k}")
                for k, v in value.items()}
    raise TypeError(f"no decoder for {hint!r} at {path}")  # a bug in this module, not input


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__
