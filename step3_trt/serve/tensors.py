"""Typed values from a Triton request's input tensors (numpy arrays, whatever their batch and
`reshape` layout): each reader checks one input and raises `BadRequest` with one line naming it.

Requests hold one sequence (`max_batch_size` 1), so every tensor is read flattened.
"""

from __future__ import annotations

import numpy as np

MAX_WORDS = 32  # entries of a stop or bad word list
MAX_WORD_BYTES = 256  # bytes of an entry given as text (a streamed response rescans stop words)
MAX_WORD_TOKENS = 256  # tokens of one entry given as token ids


class BadRequest(ValueError):
    """The request is malformed; the message says which input and why."""


Inputs = dict[str, np.ndarray]


def scalar(inputs: Inputs, name: str):
    """The one value of `name` as plain Python (for JSON), or None if the input is absent."""
    arr = inputs.get(name)
    if arr is None:
        return None
    flat = np.asarray(arr).reshape(-1)
    if flat.size != 1:
        raise BadRequest(f"{name} must hold one value, got {flat.size}")
    value = flat[0]
    return value.item() if isinstance(value, np.generic) else value


def integer(inputs: Inputs, name: str) -> int | None:
    value = scalar(inputs, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    return value


def number(inputs: Inputs, name: str) -> float | None:
    value = scalar(inputs, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    return value


def flag(inputs: Inputs, name: str) -> bool | None:
    value = scalar(inputs, name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value


def byte_len(value) -> int:
    return len(value.encode()) if isinstance(value, str) else len(value)


def utf8(value, name: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not valid UTF-8") from None


def text(inputs: Inputs, name: str) -> str | bytes | None:
    """The one string of `name`, not yet decoded (its size is checked first: serve/request.py)."""
    value = scalar(inputs, name)
    if value is not None and not isinstance(value, (str, bytes)):
        raise BadRequest(f"{name} must be a string, got {value!r}")
    return value


def strings(inputs: Inputs, name: str) -> list[str]:
    """A list of words (empty entries dropped: TensorRT-LLM clients send [""] for none)."""
    arr = inputs.get(name)
    if arr is None:
        return []
    items = np.asarray(arr, dtype=object).reshape(-1)
    if items.size > MAX_WORDS:
        raise BadRequest(f"{name} holds {items.size} entries; at most {MAX_WORDS}")
    out = []
    for item in items:
        if not isinstance(item, (str, bytes)):
            raise BadRequest(f"{name} must hold strings, got {item!r}")
        if byte_len(item) > MAX_WORD_BYTES:
            raise BadRequest(f"{name} has an entry of {byte_len(item)} bytes; at most "
                             f"{MAX_WORD_BYTES}")
        word = utf8(item, name)
        if word:
            out.append(word)
    return out


def array(inputs: Inputs, name: str) -> np.ndarray | None:
    """The tensor itself (shapes and values are checked where it is used)."""
    arr = inputs.get(name)
    return None if arr is None else np.asarray(arr)


def numbers(inputs: Inputs, name: str) -> list[float]:
    arr = inputs.get(name)
    return [] if arr is None else [float(v) for v in np.asarray(arr).reshape(-1)]


def token_ids(inputs: Inputs, name: str) -> list[int] | None:
    """Token ids of an integer tensor, in order (None if absent)."""
    arr = inputs.get(name)
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise BadRequest(f"{name} must hold integer token ids, got {arr.dtype}")
    return [int(t) for t in arr.reshape(-1)]


def word_lists(inputs: Inputs, name: str) -> list[list[int]]:
    """TensorRT-LLM's word list: [1, 2, L] int32, row 0 the words' token ids one after another,
    row 1 the offset where each word ends, then -1 (padding of either row is ignored)."""
    arr = inputs.get(name)
    if arr is None:
        return []
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu" or arr.size % 2 or (arr.ndim > 1 and arr.shape[-2] != 2):
        raise BadRequest(f"{name} must be an integer tensor [1, 2, L] (token ids; word end "
                         f"offsets, then -1), got {arr.dtype} {list(arr.shape)}")
    ids, offsets = (row.tolist() for row in arr.reshape(2, -1))
    words, start = [], 0
    for end in offsets:
        if end < 0:
            break
        if not start < end <= len(ids):
            raise BadRequest(f"{name}: word end offsets must increase within the {len(ids)} "
                             f"token ids, got {offsets}")
        if end - start > MAX_WORD_TOKENS:
            raise BadRequest(f"{name} has a word of {end - start} tokens; at most "
                             f"{MAX_WORD_TOKENS}")
        words.append(ids[start:end])
        start = end
    if len(words) > MAX_WORDS:
        raise BadRequest(f"{name} holds {len(words)} words; at most {MAX_WORDS}")
    return words


def to_word_lists(words: list[list[int]]) -> np.ndarray:
    """The inverse of `word_lists`: [1, 2, max(1, L)] int32 (as TensorRT-LLM's preprocessing
    makes it: ids padded with 0, offsets with -1; no words: [1, 2, 0])."""
    if not words:
        return np.zeros((1, 2, 0), dtype=np.int32)
    flat = [t for w in words for t in w]
    offsets = np.cumsum([len(w) for w in words]).tolist()
    width = max(1, len(flat))
    rows = [flat + [0] * (width - len(flat)), offsets + [-1] * (width - len(offsets))]
    return np.array([rows], dtype=np.int32)
