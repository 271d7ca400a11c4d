"""Sampling parameters and the token sampler (greedy, temperature, top-k, top-p, seed), and the
repetition, presence and frequency penalties (`apply_penalties`).

The sampler is numerically safe for every valid parameter set and any logits:
- Temperature divides the logits *minus their maximum*, so no finite temperature overflows:
  the top token's scaled logit is 0 and every other one is <= 0. A temperature so small that
  every other token's scaled logit underflows to -inf (1e-38, say) samples only the top token:
  greedy, with exact ties split at random.
- NaN logits are never chosen (treated as -inf). If any logit is +inf, the choice is among the
  +inf tokens only (uniform when sampling, the first when greedy).
- If no token is left to choose (every logit -inf or NaN: every token banned), `sample` returns
  the first token id, as argmax does, instead of raising; nothing non-finite ever reaches
  `torch.multinomial`.

Penalties follow TensorRT-LLM's penalty kernel: every token that occurs in the sequence so far
(prompt and output) has its logit l divided by `repetition_penalty` if l > 0 (multiplied if
l <= 0), then lowered by `presence_penalty` and by `frequency_penalty` times its count. They act
on the logits before the temperature (TensorRT-LLM divides by the temperature first: the same
result at temperature 1, and for the repetition penalty at any temperature), and in greedy
decoding too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 32
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    stop_strings: tuple[str, ...] = field(default_factory=tuple)  # needs a detokenizer
    repetition_penalty: float = 1.0  # 1 = none; > 1 discourages tokens already in the sequence
    presence_penalty: float = 0.0  # subtracted once from the logit of a token already present
    frequency_penalty: float = 0.0  # subtracted per occurrence

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) \
                or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2 ** 64):
            raise ValueError(f"seed must be an integer in [0, 2^64), got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop_strings!r}")
        if not _finite_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be a finite number > 0, got "
                             f"{self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not _finite_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or \
            self.frequency_penalty != 0.0

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0 or self.top_k == 1

    def generator(self) -> torch.Generator | None:
        if self.is_greedy:
            return None
        g = torch.Generator()
        g.manual_seed(self.seed if self.seed is not None else torch.seed())
        return g


def _finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def apply_penalties(logits: torch.Tensor, tokens: Sequence[int],
                    params: SamplingParams) -> torch.Tensor:
    """logits [V] -> float32 logits [V] with the penalties of `params` applied to every token of
    `tokens` (the sequence so far: prompt and output). Non-finite logits stay non-finite; the
    sampler handles them."""
    out = logits.float().clone()
    if not tokens or not params.has_penalties:
        return out
    counts = torch.bincount(torch.tensor(list(tokens), device=out.device),
                            minlength=out.numel())[:out.numel()]  # [V]
    seen = counts > 0
    if params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        out = torch.where(seen, torch.where(out > 0, out / rp, out * rp), out)
    if params.presence_penalty != 0.0:
        out = out - seen.float() * params.presence_penalty
    if params.frequency_penalty != 0.0:
        out = out - counts.float() * params.frequency_penalty
    return out


def stop_string_hit(text: str, params: SamplingParams) -> int | None:
    """Index in `text` where the first stop string begins, or None."""
    hits = [i for i in (text.find(s) for s in params.stop_strings) if i >= 0]
    return min(hits) if hits else None


def _without_nan(logits: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(logits.isnan(), NEG_INF)


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [V] -> float32 temperature-scaled logits, every entry <= 0 or -inf (filtered or
    impossible), the top token's 0; all -inf when no token can be chosen."""
    logits = _without_nan(logits.float())
    top = logits.max()
    if top == float("inf"):  # only the +inf tokens can win
        return torch.zeros_like(logits).masked_fill(logits != top, NEG_INF)
    if top == NEG_INF:
        return logits
    logits = (logits - top) / params.temperature  # <= 0: no overflow for any temperature > 0
    if 0 < params.top_k < logits.numel():
        kth = logits.topk(params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= params.top_p  # keep until mass reaches top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), NEG_INF)
    return logits


def sample(logits: torch.Tensor, params: SamplingParams,
           generator: torch.Generator | None) -> int:
    """One token from logits [V] (any float dtype, CPU or GPU)."""
    if params.is_greedy:
        return int(_without_nan(logits).argmax())
    scaled = filter_logits(logits.float().cpu(), params)
    if scaled.max() == NEG_INF:  # nothing can be chosen: see the module docstring
        return 0
    return int(torch.multinomial(scaled.softmax(-1), 1, generator=generator))
