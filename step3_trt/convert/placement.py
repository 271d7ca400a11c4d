"""Where the FFN work of an AFD job lives: placement P2 (`balanced`, docs/decisions.md).

FFN rank j = (group, tp_rank) = divmod(j, tp). Routed experts are expert-parallel: EP group g
owns the contiguous block `split(experts, ep, g)` (near-equal blocks, so `ep` need not divide
the expert count), each expert sliced along its intermediate dimension by `tp`. The shared expert
and the dense MLPs are replicated in every EP group (sliced by `tp` inside it). A token's routed
work goes to the groups owning its top-k experts; its shared-expert work to one of those groups
and its dense-layer work to one group (runtime/expert_dispatch.py decides which), so a token
reaches at most `top_k` groups (`top_k * tp` ranks) whatever the number of FFN ranks.

Recorded in every rank's `mapping` (role checkpoints and engines) as `placement`, so the
attention ranks know where to send and the FFN ranks what they own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PLACEMENT = "balanced"


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """Bounds of part `index` when n items are cut into `parts` near-equal contiguous parts."""
    return n * index // parts, n * (index + 1) // parts


@dataclass(frozen=True)
class FfnPlacement:
    experts: int  # routed experts of the model (0 without MoE layers)
    ep: int  # expert-parallel groups
    tp: int  # ranks per group (tensor parallelism inside each expert and replica)
    name: str = PLACEMENT

    def __post_init__(self):
        if self.name != PLACEMENT:
            raise ValueError(f"FFN placement {self.name!r} is not built (only {PLACEMENT!r}); "
                             f"rebuild the engines")
        if self.ep < 1 or self.tp < 1 or (self.experts and self.ep > self.experts):
            raise ValueError(f"FFN placement: ep = {self.ep} must be in [1, {self.experts}] "
                             f"(one expert per group at least) and tp = {self.tp} >= 1")

    @property
    def ranks(self) -> int:
        return self.ep * self.tp

    def group_of(self, rank: int) -> int:
        """The EP group of FFN rank `rank`."""
        return rank // self.tp

    def ranks_of(self, group: int) -> range:
        """The FFN ranks of EP group `group` (its TP slices)."""
        return range(group * self.tp, (group + 1) * self.tp)

    def experts_of(self, group: int) -> tuple[int, int]:
        """[first, last) global ids of the routed experts EP group `group` owns."""
        return split(self.experts, self.ep, group)

    def expert_groups(self) -> list[int]:
        """[experts] the EP group owning each routed expert."""
        out = []
        for g in range(self.ep):
            first, last = self.experts_of(g)
            out += [g] * (last - first)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "FfnPlacement":
        try:
            return cls(int(raw["experts"]), int(raw["ep"]), int(raw["tp"]), str(raw["name"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"FFN placement record {raw!r} is incomplete ({e}); rebuild the "
                             f"engines") from None
