"""Reading safetensors headers without touching tensor data, with integrity checks.

A safetensors file is `u64 little-endian header length | JSON header | data`. Reading only the
header lets us validate a 600 GB checkpoint (names, dtypes, shapes, byte ranges) in seconds.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

# safetensors dtype code -> (torch dtype name, bytes per element). Names, not torch objects, so
# that inspecting a checkpoint does not pay for importing torch.
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
    "BF16": ("bfloat16", 2), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}
CODES = {name: code for code, (name, _) in DTYPES.items()}  # "bfloat16" -> "BF16"
MAX_HEADER_BYTES = 256 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, corrupt or does not match its config."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: Path
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # absolute byte offset of the tensor's data in `file`

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, DTYPES[self.dtype][0])


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and check one safetensors file's header; raise CheckpointError naming the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: file is truncated ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(f"{path}: corrupt header (claims {n} header bytes, "
                                      f"file has {size})")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: corrupt header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt header (not a JSON object)")
    data_bytes = size - 8 - n
    entries = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt header entry for tensor `{name}`") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor `{name}` has unknown dtype {dtype!r}")
        expected = math.prod(shape) * DTYPES[dtype][1]
        if end - start != expected or start < 0:
            raise CheckpointError(f"{path}: tensor `{name}` byte range [{start}, {end}) does not "
                                  f"match its shape {list(shape)} and dtype {dtype}")
        if end > data_bytes:
            raise CheckpointError(f"{path}: file is truncated: tensor `{name}` needs bytes up to "
                                  f"{end} of the data section but only {data_bytes} are present")
        entries[name] = TensorEntry(name, path, dtype, shape, expected, 8 + n + start)
    return entries
