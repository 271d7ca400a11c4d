"""Lazy, validating reader for Step-3 checkpoints (safetensors shards + index, or one file).

Opening a checkpoint reads only `config.json`, the index and the shard headers; tensors are
loaded one at a time on request, so a full-size checkpoint is handled in bounded memory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from step3_trt.checkpoint.layout import TensorSpec, is_vision_tensor, text_specs
from step3_trt.checkpoint.safetensors_header import (CODES, CheckpointError, TensorEntry,
                                                     read_header)
from step3_trt.config import Step3Config
from step3_trt.quant.dequant import dequantize
from step3_trt.quant.scheme import Fp8Scheme, QuantConfigError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Unquantized text tensors must be stored in one of these floating types.
FLOAT_CODES = ("F32", "BF16", "F16")


class TensorStore:
    """The tensors of a safetensors directory (shards + index, or one file), read lazily.

    Tensors are read with plain positioned reads into freshly allocated tensors (no mmap), so the
    memory a caller holds is exactly the tensors it keeps.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"checkpoint directory {self.root} does not exist")
        self.entries: dict[str, TensorEntry] = self._read_entries()

    # ---- discovery -----------------------------------------------------------------------
    def _read_entries(self) -> dict[str, TensorEntry]:
        index = self.root / INDEX_FILE
        if index.is_file():
            return self._entries_from_index(index)
        single = self.root / SINGLE_FILE
        if single.is_file():
            return read_header(single)
        raise CheckpointError(f"{self.root}: no {INDEX_FILE} and no {SINGLE_FILE}")

    def _entries_from_index(self, index: Path) -> dict[str, TensorEntry]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{index}: not a valid index (needs a `weight_map` object)") \
                from None
        by_file: dict[str, list[str]] = defaultdict(list)
        for name, fname in weight_map.items():
            by_file[fname].append(name)
        entries = {}
        for fname, names in sorted(by_file.items()):
            path = self.root / fname
            if not path.is_file():
                raise CheckpointError(f"{index}: tensor `{names[0]}` (and {len(names) - 1} more) "
                                      f"maps to missing file {fname}")
            header = read_header(path)
            for name in names:
                if name not in header:
                    raise CheckpointError(f"{index}: tensor `{name}` maps to {fname}, "
                                          f"which does not contain it")
                entries[name] = header[name]
            stray = sorted(set(header) - set(names))
            if stray:
                raise CheckpointError(f"{path}: tensor `{stray[0]}` is in the shard but not in "
                                      f"{INDEX_FILE}")
        return entries

    # ---- loading -------------------------------------------------------------------------
    def get(self, name: str) -> torch.Tensor:
        """Load one tensor (and only that tensor) from its shard."""
        entry = self._entry(name)
        return self._read(entry, 0, entry.shape[0] if entry.shape else 1)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Load `tensor[start:stop]` along dim 0 without reading the rest (e.g. some experts)."""
        entry = self._entry(name)
        if not entry.shape or not 0 <= start <= stop <= entry.shape[0]:
            raise CheckpointError(f"rows [{start}, {stop}) out of range for `{name}` "
                                  f"of shape {list(entry.shape)}")
        return self._read(entry, start, stop)

    @staticmethod
    def _read(entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
        shape = (stop - start, *entry.shape[1:]) if entry.shape else ()
        out = torch.empty(shape, dtype=entry.torch_dtype)
        row_bytes = entry.nbytes // entry.shape[0] if entry.shape and entry.shape[0] else 0
        buf = out.view(-1).view(torch.uint8).numpy() if out.numel() else None
        if buf is not None:
            with open(entry.file, "rb") as f:
                f.seek(entry.offset + start * row_bytes)
                if f.readinto(buf) != buf.nbytes:
                    raise CheckpointError(f"{entry.file}: short read for tensor `{entry.name}`")
        return out

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise CheckpointError(f"{self.root}: no tensor `{name}`") from None


class CheckpointReader(TensorStore):
    """A Step-3 checkpoint directory: its config plus its tensors. `validate()` checks every text
    tensor against the config; vision tensors are recognised and skipped."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise CheckpointError(f"checkpoint directory {root} does not exist")
        self.config = Step3Config.from_file(root)
        self.raw_config: dict[str, Any] = json.loads((root / "config.json").read_text())
        try:
            self.quant: Fp8Scheme | None = Fp8Scheme.from_config(self.raw_config)
        except QuantConfigError as e:
            raise CheckpointError(f"{root / 'config.json'}: {e}") from None
        super().__init__(root)

    @property
    def specs(self) -> list[TensorSpec]:
        """Every text tensor this checkpoint must hold (FP8: weights, their scales), in order."""
        specs = text_specs(self.config)
        return self.quant.checkpoint_specs(specs) if self.quant else specs

    # ---- validation ----------------------------------------------------------------------
    @property
    def text_names(self) -> list[str]:
        return [n for n in self.entries if not is_vision_tensor(n)]

    @property
    def vision_names(self) -> list[str]:
        return [n for n in self.entries if is_vision_tensor(n)]

    def validate(self) -> "CheckpointReader":
        """Check every text tensor against the config; vision tensors are skipped."""
        expected = {s.name: s for s in self.specs}
        missing = [n for n in expected if n not in self.entries]
        if self.quant is not None:
            for name in missing:  # a linear stored unquantized that the config does not list
                weight = self.entries.get(self.quant.weight_of(name))
                if name.endswith(("_scale", "_scale_inv")) and weight is not None \
                        and weight.dtype in FLOAT_CODES:
                    module = weight.name.removesuffix(".weight")
                    raise CheckpointError(
                        f"{weight.file}: `{weight.name}` is {weight.dtype} without `{name}`; "
                        f"an FP8 checkpoint must list `{module}` in quantization_config."
                        f"modules_to_not_convert (or ignored_layers) to keep it unquantized")
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CheckpointError(f"{self.root}: missing tensor `{missing[0]}`{more}")
        for name in self.text_names:
            if name not in expected:
                raise CheckpointError(f"{self.entries[name].file}: unexpected tensor `{name}` "
                                      f"(not part of the Step-3 text model for this config)")
        for name, spec in expected.items():  # model order: the first mismatch is reported
            _check_entry(self.entries[name], spec)
        return self

    def iter_text(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream every text tensor of the model in model order, one at a time; FP8 weights
        come dequantized to float32 (their scale tensors are consumed, not yielded)."""
        for spec in text_specs(self.config):
            if self.quant is not None and self.quant.quantizes(spec):
                scale = self.get(self.quant.scale_name(spec.name)).float()
                yield spec.name, dequantize(self.get(spec.name), scale)
            else:
                yield spec.name, self.get(spec.name)


def _check_entry(entry: TensorEntry, spec: TensorSpec) -> None:
    if entry.shape != spec.shape:
        raise CheckpointError(f"{entry.file}: tensor `{entry.name}` has shape {list(entry.shape)}, "
                              f"expected {list(spec.shape)}")
    if spec.dtype is not None:
        accepted = [CODES[d] for d in (spec.stored or (spec.dtype,))]
        if entry.dtype not in accepted:
            raise CheckpointError(f"{entry.file}: tensor `{entry.name}` has dtype {entry.dtype}, "
                                  f"expected {' or '.join(accepted)}")
    elif entry.dtype not in FLOAT_CODES:
        raise CheckpointError(f"{entry.file}: tensor `{entry.name}` has dtype {entry.dtype}, "
                              f"expected one of {', '.join(FLOAT_CODES)}")


def checkpoint_digest(reader: CheckpointReader) -> str:
    """Identity of a checkpoint from its config, every tensor's name, dtype, shape and file size,
    and the files that travel with the tokenizer (tokenizer, chat template, generation config):
    cheap (headers only) and changes whenever the weights' layout or those files change, so
    engines built from an older copy of them are rebuilt."""
    import hashlib

    from step3_trt.manifest import TOKENIZER_FILES

    h = hashlib.sha256((reader.root / "config.json").read_bytes())
    for name in sorted(reader.entries):
        e = reader.entries[name]
        h.update(f"{name}|{e.dtype}|{e.shape}|{e.file.name}|{e.file.stat().st_size}\n".encode())
    for name in TOKENIZER_FILES:
        if (reader.root / name).is_file():
            h.update(name.encode() + b"\0" + (reader.root / name).read_bytes())
    return h.hexdigest()[:16]
