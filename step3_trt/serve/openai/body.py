"""A request's JSON body, bounded and read field by field.

The body is read up to the model's byte bound (`ServedModel.max_body_bytes`; a longer one is
413 before it is parsed), parsed as strict JSON (NaN and Infinity are not JSON) and then read
one typed field at a time; each error is one line naming the field. `null` means absent, as in
OpenAI's API. A field that no reader asked for is refused by `finish` ("unrecognized request
argument"), never silently ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from step3_trt.serve.openai.errors import bad_request, too_large


async def read_body(request, limit: int) -> bytes:
    """The raw body of a Starlette request, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise bad_request("the request body is not valid JSON: nested too deeply") from None


def kind(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string",
                                         bool: "boolean"}.get(type(value), type(value).__name__)


class Body:
    def __init__(self, raw: Any):
        if not isinstance(raw, dict):
            raise bad_request(f"the request body must be a JSON object, got {kind(raw)}")
        self.raw: dict[str, Any] = raw
        self.read: set[str] = set()

    def get(self, name: str) -> Any:
        self.read.add(name)
        return self.raw.get(name)

    def string(self, name: str, required: bool = False) -> str | None:
        value = self.get(name)
        if value is None:
            if required:
                raise bad_request(f"{name} is required", name)
            return None
        if not isinstance(value, str):
            raise bad_request(f"{name} must be a string, got {kind(value)}", name)
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.get(name)
        if value is not None and not isinstance(value, bool):
            raise bad_request(f"{name} must be true or false, got {kind(value)}", name)
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        """An integer in [low, high]."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"{name} must be an integer, got {kind(value)}", name)
        if not low <= value <= high:
            raise bad_request(f"{name} must be in [{low}, {high}], got {value}", name)
        return value

    def number(self, name: str, low: float, high: float, low_open: bool = False) -> float | None:
        """A number in [low, high] ((low, high] with `low_open`)."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(f"{name} must be a number, got {kind(value)}", name)
        inside = (low < value if low_open else low <= value) and value <= high
        if not (math.isfinite(value) and inside):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise bad_request(f"{name} must be in {span}, got {value}", name)
        return float(value)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.read)
        if unknown:
            raise bad_request(f"unrecognized request argument(s): {', '.join(unknown)}",
                              unknown[0])
