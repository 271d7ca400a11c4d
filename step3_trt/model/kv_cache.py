"""Contiguous KV cache for the reference model: one K and one V head per layer (MFA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ContiguousKVCache:
    k: torch.Tensor  # [layers, batch, max_len, head_dim]
    v: torch.Tensor  # [layers, batch, max_len, head_dim]
    lengths: torch.Tensor  # [batch] int64: tokens already cached per sequence

    @classmethod
    def allocate(cls, layers: int, batch: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> "ContiguousKVCache":
        shape = (layers, batch, max_len, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device),
                   torch.zeros(shape, dtype=dtype, device=device),
                   torch.zeros(batch, dtype=torch.int64, device=device))

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, num_new: torch.Tensor) -> None:
        """Append the first `num_new[b]` of `k[b]`, `v[b]` ([batch, T, head_dim]) after `lengths[b]`."""
        end = self.lengths + num_new
        if int(end.max()) > self.max_len:
            raise ValueError(f"KV cache overflow: a sequence needs {int(end.max())} positions, "
                             f"the cache holds {self.max_len}")
        for b in range(k.shape[0]):
            start, n = int(self.lengths[b]), int(num_new[b])
            self.k[layer, b, start:start + n] = k[b, :n]
            self.v[layer, b, start:start + n] = v[b, :n]

    def advance(self, num_new: torch.Tensor) -> None:
        self.lengths += num_new
