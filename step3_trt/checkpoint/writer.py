"""Writing checkpoints: sharded safetensors + index, into a directory that appears atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from step3_trt.checkpoint.reader import INDEX_FILE, SINGLE_FILE


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


class ShardWriter:
    """Accumulates tensors into shards of at most `max_shard_bytes` and writes the index.

    Memory held is bounded by one shard (plus one tensor larger than a shard, written alone).
    """

    def __init__(self, out_dir: Path, max_shard_bytes: int = 2 * 1024**3, metadata=None):
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[dict[str, torch.Tensor] | list[str]] = []
        self._weight_map: dict[str, int] = {}
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._weight_map or name in self._pending:
            raise ValueError(f"tensor `{name}` written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def add_all(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in tensors:
            self.add(name, tensor)

    def _flush(self) -> None:
        if not self._pending:
            return
        idx = len(self._shards)
        save_file(self._pending, str(self.out_dir / f"shard-{idx:05d}.safetensors"),
                  metadata=self.metadata)
        for name in self._pending:
            self._weight_map[name] = idx
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, rename shards to the HF pattern and write the index."""
        self._flush()
        n = len(self._shards)
        if n == 0:
            raise ValueError("no tensors were written")
        names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        if n == 1:
            names = [SINGLE_FILE]
        for i, final in enumerate(names):
            os.replace(self.out_dir / f"shard-{i:05d}.safetensors", self.out_dir / final)
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes},
                     "weight_map": {k: names[v] for k, v in sorted(self._weight_map.items())}}
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return names
