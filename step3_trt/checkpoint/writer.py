"""Writing checkpoints: streamed safetensors shards + index, in directories that appear atomically."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from step3_trt.checkpoint.reader import INDEX_FILE, SINGLE_FILE
from step3_trt.checkpoint.safetensors_header import CODES, DTYPES


@contextlib.contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it is renamed to `out`, on failure removed.

    An interrupted or failed stage therefore never leaves a directory at `out` that looks complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (same bytes, no extra disk) where the filesystem allows, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "bfloat16"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[CODES[self.dtype]][1]


class StreamingShardWriter:
    """Writes safetensors shards + index from a layout declared up front, one tensor at a time.

    Knowing every name, shape and dtype in advance lets each shard's header be written before its
    data, so memory never holds more than the tensor being written. Tensors must arrive in the
    declared order.
    """

    def __init__(self, out_dir: str | Path, layout: Sequence[PlannedTensor],
                 max_shard_bytes: int = 4 * 1024**3):
        if not layout:
            raise ValueError("no tensors to write")
        self.out_dir = Path(out_dir)
        self.layout = list(layout)
        self.shards = _group(self.layout, max_shard_bytes)
        n = len(self.shards)
        self.files = [SINGLE_FILE] if n == 1 else \
            [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._next = 0  # index into layout
        self._file = None
        self._shard = -1

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self.layout):
            raise ValueError(f"tensor `{name}` is beyond the declared layout")
        spec = self.layout[self._next]
        got = (name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        if got != (spec.name, spec.shape, spec.dtype):
            raise ValueError(f"expected tensor `{spec.name}` {list(spec.shape)} {spec.dtype} next, "
                             f"got `{name}` {list(got[1])} {got[2]}")
        shard = next(i for i, group in enumerate(self.shards) if spec in group)
        if shard != self._shard:
            self._open(shard)
        data = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._next += 1

    def _open(self, shard: int) -> None:
        if self._file is not None:
            self._file.close()
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for spec in self.shards[shard]:
            header[spec.name] = {"dtype": CODES[spec.dtype], "shape": list(spec.shape),
                                 "data_offsets": [offset, offset + spec.nbytes]}
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._file = open(self.out_dir / self.files[shard], "wb")
        self._file.write(struct.pack("<Q", len(blob)) + blob)
        self._shard = shard

    def close(self) -> list[str]:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._next != len(self.layout):
            raise ValueError(f"only {self._next} of {len(self.layout)} declared tensors written; "
                             f"next expected: `{self.layout[self._next].name}`")
        if len(self.files) > 1:
            weight_map = {spec.name: self.files[i]
                          for i, group in enumerate(self.shards) for spec in group}
            index = {"metadata": {"total_size": sum(s.nbytes for s in self.layout)},
                     "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return self.files


def planned(name: str, tensor: torch.Tensor) -> PlannedTensor:
    return PlannedTensor(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))


def write_tensors(out_dir: str | Path, tensors: Iterable[tuple[str, torch.Tensor]],
                  max_shard_bytes: int = 4 * 1024**3) -> list[str]:
    """Write tensors that are already in memory (small models) as shards + index."""
    tensors = list(tensors)
    writer = StreamingShardWriter(out_dir, [planned(n, t) for n, t in tensors], max_shard_bytes)
    for name, tensor in tensors:
        writer.write(name, tensor)
    return writer.close()


def _group(layout: list[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    """Consecutive tensors into shards of at most max_bytes (a larger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for spec in layout:
        if shards[-1] and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards
