"""Who is who in an AFD job: typed rank identities and the job's layout.

World rank 0 coordinates; then come the attention ranks, then the FFN ranks. Engine directories
name their ranks `attention/rank0`, `ffn/rank1`, ...; `RankId.parse` is the one place that reads
that form.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Role(enum.Enum):
    COORDINATOR = "coordinator"
    ATTENTION = "attention"
    FFN = "ffn"


@dataclass(frozen=True, order=True)
class RankId:
    role: Role
    index: int

    _DIR = re.compile(r"(attention|ffn)/rank(\d+)")

    @classmethod
    def parse(cls, rank_dir: str) -> "RankId":
        """`attention/rank0` -> RankId(ATTENTION, 0) (the engine manifest's rank names)."""
        m = cls._DIR.fullmatch(rank_dir)
        if m is None:
            raise ValueError(f"not a rank directory name: {rank_dir!r} (expected "
                             f"attention/rankN or ffn/rankN)")
        return cls(Role(m.group(1)), int(m.group(2)))

    @property
    def dir(self) -> str:
        return f"{self.role.value}/rank{self.index}"

    def __str__(self) -> str:
        if self.role is Role.COORDINATOR:
            return "the coordinator"
        return f"{'attention' if self.role is Role.ATTENTION else 'FFN'} rank {self.index}"


COORDINATOR = RankId(Role.COORDINATOR, 0)


@dataclass(frozen=True)
class JobLayout:
    attention: int  # number of attention ranks
    ffn: int  # number of FFN ranks

    def __post_init__(self):
        if self.attention < 1 or self.ffn < 1:
            raise ValueError(f"an AFD job needs at least one attention and one FFN rank, got "
                             f"{self.attention} and {self.ffn}")

    @classmethod
    def from_ranks(cls, rank_dirs: list[str]) -> "JobLayout":
        """The layout of an engine directory's `ranks` list (attention/rank0, ffn/rank0, ...)."""
        ids = [RankId.parse(r) for r in rank_dirs]
        for role in (Role.ATTENTION, Role.FFN):
            got = sorted(i.index for i in ids if i.role is role)
            if got != list(range(len(got))):
                raise ValueError(f"{role.value} ranks must be numbered 0..n-1, got {got}")
        return cls(sum(i.role is Role.ATTENTION for i in ids),
                   sum(i.role is Role.FFN for i in ids))

    @property
    def world_size(self) -> int:
        return 1 + self.attention + self.ffn

    def world(self, rank: RankId) -> int:
        """The MPI world rank of `rank`."""
        if rank.role is Role.COORDINATOR:
            return 0
        if rank.role is Role.ATTENTION:
            return 1 + rank.index
        return 1 + self.attention + rank.index

    def rank_id(self, world: int) -> RankId:
        if not 0 <= world < self.world_size:
            raise ValueError(f"MPI rank {world} is outside this job's {self.world_size} ranks")
        if world == 0:
            return COORDINATOR
        if world <= self.attention:
            return RankId(Role.ATTENTION, world - 1)
        return RankId(Role.FFN, world - 1 - self.attention)

    @property
    def attention_ranks(self) -> list[RankId]:
        return [RankId(Role.ATTENTION, i) for i in range(self.attention)]

    @property
    def ffn_ranks(self) -> list[RankId]:
        return [RankId(Role.FFN, j) for j in range(self.ffn)]

    @property
    def workers(self) -> list[RankId]:
        """Every rank but the coordinator: attention ranks, then FFN ranks."""
        return self.attention_ranks + self.ffn_ranks

    @property
    def leader(self) -> RankId:
        """The attention rank that decides, each round, whether the workers run a step."""
        return RankId(Role.ATTENTION, 0)

    def name(self, rank: RankId) -> str:
        """How errors name a rank: `FFN rank 1 (MPI rank 4)`."""
        if rank.role is Role.COORDINATOR:
            return str(rank)
        return f"{rank} (MPI rank {self.world(rank)})"
