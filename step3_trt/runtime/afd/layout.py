"""Who is who in an AFD job: world rank 0 coordinates, then the attention ranks, then FFN ranks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobLayout:
    attention: int  # number of attention ranks
    ffn: int  # number of FFN ranks

    COORDINATOR = 0

    @property
    def world_size(self) -> int:
        return 1 + self.attention + self.ffn

    def attention_world(self, i: int) -> int:
        return 1 + i

    def ffn_world(self, j: int) -> int:
        return 1 + self.attention + j

    @property
    def attention_ranks(self) -> list[int]:
        return [self.attention_world(i) for i in range(self.attention)]

    @property
    def ffn_ranks(self) -> list[int]:
        return [self.ffn_world(j) for j in range(self.ffn)]

    def role_of(self, world: int) -> tuple[str, int]:
        if world == self.COORDINATOR:
            return "coordinator", 0
        if world <= self.attention:
            return "attention", world - 1
        return "ffn", world - 1 - self.attention

    def name(self, world: int) -> str:
        role, index = self.role_of(world)
        return "the coordinator" if role == "coordinator" else \
            f"{'attention' if role == 'attention' else 'FFN'} rank {index} (MPI rank {world})"

    def names(self) -> dict[int, str]:
        return {w: self.name(w) for w in range(self.world_size)}
