"""The tensors one engine step needs, built from the scheduler's chunks (tokens flattened)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from step3_trt.runtime.scheduler import Chunk


@dataclass
class StepBatch:
    ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    block_tables: torch.Tensor  # [S, M] int32 (padded with block 0)
    seq_lens: torch.Tensor  # [S] int32: cached + new tokens (0: a padding row)
    cu_seqlens_q: torch.Tensor  # [S + 1] int32
    last_index: torch.Tensor  # [n] int64: each real sequence's last new token in the flat layout
    is_decode: bool  # every sequence has exactly one new token
    graphed: bool = False  # padded to a CUDA-graph bucket: engine calls replay graphs

    @property
    def num_tokens(self) -> int:
        return self.ids.shape[0]

    def attention_inputs(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
        """Runtime inputs of the attention graphs, in signature order."""
        return (x, self.positions, k_cache, v_cache, self.slot_mapping, self.block_tables,
                self.seq_lens, self.cu_seqlens_q)


def make_batch(chunks: list[Chunk], block_tables: list[list[int]], device: torch.device | str,
               rows: int | None = None, table_width: int | None = None,
               graphed: bool = False) -> StepBatch:
    """The step's tensors. `rows` > len(chunks) appends padding sequences (one token each, at
    position 0, length 0, KV slot -1: attention skips them, their outputs are 0 and unused);
    `table_width` pads the block tables to that many columns. CUDA graphs use both to give
    every step of a batch bucket the same shapes."""
    ids, positions, slots, lens, cu = [], [], [], [], [0]
    for c in chunks:
        n = len(c.tokens)
        ids += c.tokens
        positions += range(c.start, c.start + n)
        slots += c.slots
        lens.append(c.start + n)
        cu.append(cu[-1] + n)
    last = [i - 1 for i in cu[1:]]
    pad = (rows or len(chunks)) - len(chunks)
    ids += [0] * pad
    positions += [0] * pad
    slots += [-1] * pad
    lens += [0] * pad
    cu += range(cu[-1] + 1, cu[-1] + 1 + pad)
    width = max(len(t) for t in block_tables)
    if table_width is not None:
        if table_width < width:
            raise ValueError(f"a block table has {width} blocks, more than the {table_width} "
                             f"the batch is padded to")
        width = table_width
    tables = torch.zeros(len(chunks) + pad, width, dtype=torch.int32)
    for i, t in enumerate(block_tables):
        tables[i, :len(t)] = torch.tensor(t, dtype=torch.int32)

    def as_tensor(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    return StepBatch(
        ids=as_tensor(ids, torch.int64), positions=as_tensor(positions, torch.int64),
        slot_mapping=as_tensor(slots, torch.int64), block_tables=tables.to(device),
        seq_lens=as_tensor(lens, torch.int32), cu_seqlens_q=as_tensor(cu, torch.int32),
        last_index=as_tensor(last, torch.int64),
        is_decode=all(len(c.tokens) == 1 for c in chunks), graphed=graphed)
