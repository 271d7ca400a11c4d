"""Accuracy of engines against a reference model: the metric math, free of models and files.

Both sides score the same token windows. Per scored token, from the two logit rows:
top-1 agreement (same argmax), KL(reference || engine) in nats, and each side's negative
log-likelihood of the true next token. All of it in float64 from log-softmax, accumulated as
plain sums (`LogitStats`) so windows can be added up in any order; `EvalResult` turns the sums
into the reported means, perplexities and their ratio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def eval_windows(ids: list[int], seq_len: int, max_tokens: int,
                 bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both [W, seq_len] int64, from consecutive non-overlapping windows of
    `ids`: inputs `[BOS] + w[:-1]`, targets `w`, so every token of a window is scored from the
    ones before it. Whole windows only, at most `max_tokens` scored tokens."""
    if seq_len < 1:
        raise ValueError(f"--seq-len must be at least 1, got {seq_len}")
    if max_tokens < seq_len:
        raise ValueError(f"--max-tokens {max_tokens} is less than one window (--seq-len {seq_len})")
    count = min(len(ids) // seq_len, max_tokens // seq_len)
    if count == 0:
        raise ValueError(f"the data has {len(ids)} tokens, fewer than one window of "
                         f"--seq-len {seq_len}")
    targets = torch.tensor(ids[:count * seq_len], dtype=torch.int64).view(count, seq_len)
    inputs = torch.cat([torch.full((count, 1), bos_id, dtype=torch.int64), targets[:, :-1]], 1)
    return inputs, targets


@dataclass(frozen=True)
class LogitStats:
    """Sums over a set of scored tokens."""

    tokens: int = 0
    top1_agree: int = 0  # tokens whose engine argmax equals the reference argmax
    kl_sum: float = 0.0  # sum of KL(reference || engine), nats
    nll_reference: float = 0.0  # sum of -log p_reference(target), nats
    nll_engine: float = 0.0  # sum of -log p_engine(target), nats

    def __add__(self, other: LogitStats) -> LogitStats:
        return LogitStats(self.tokens + other.tokens, self.top1_agree + other.top1_agree,
                          self.kl_sum + other.kl_sum, self.nll_reference + other.nll_reference,
                          self.nll_engine + other.nll_engine)


def compare_logits(ref_logits: torch.Tensor, eng_logits: torch.Tensor,
                   targets: torch.Tensor) -> LogitStats:
    """ref_logits, eng_logits [N, V] (row t predicts targets[t]), targets [N] -> sums over N."""
    if ref_logits.dim() != 2 or ref_logits.shape != eng_logits.shape:
        raise ValueError(f"logits must both be [tokens, vocab]; got reference "
                         f"{tuple(ref_logits.shape)} and engine {tuple(eng_logits.shape)}")
    if targets.shape != ref_logits.shape[:1]:
        raise ValueError(f"targets must be [{ref_logits.shape[0]}], got {tuple(targets.shape)}")
    ref = torch.log_softmax(ref_logits.detach().cpu().double(), dim=-1)
    eng = torch.log_softmax(eng_logits.detach().cpu().double(), dim=-1)
    p_ref = ref.exp()
    kl = torch.where(p_ref > 0, p_ref * (ref - eng), 0.0).sum(-1)
    rows = targets.detach().cpu().long()[:, None]
    return LogitStats(
        tokens=int(targets.shape[0]),
        top1_agree=int((ref.argmax(-1) == eng.argmax(-1)).sum()),
        kl_sum=float(kl.sum()),
        nll_reference=float(-ref.gather(-1, rows).sum()),
        nll_engine=float(-eng.gather(-1, rows).sum()))


@dataclass(frozen=True)
class EvalResult:
    tokens: int
    top1_agreement: float  # fraction of tokens
    mean_kl: float  # nats per token, KL(reference || engine)
    ppl_reference: float
    ppl_engine: float
    ppl_ratio: float  # ppl_engine / ppl_reference

    @classmethod
    def from_stats(cls, stats: LogitStats) -> EvalResult:
        if stats.tokens == 0:
            raise ValueError("no tokens were scored")
        n = stats.tokens
        ref, eng = stats.nll_reference / n, stats.nll_engine / n
        return cls(tokens=n, top1_agreement=stats.top1_agree / n, mean_kl=stats.kl_sum / n,
                   ppl_reference=math.exp(ref), ppl_engine=math.exp(eng),
                   ppl_ratio=math.exp(eng - ref))

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [("tokens scored", f"{self.tokens:,}"),
                ("top-1 agreement", f"{self.top1_agreement:.4f}"),
                ("mean KL (ref || engine)", f"{self.mean_kl:.3e} nats/token"),
                ("ppl reference", f"{self.ppl_reference:.4f}"),
                ("ppl engine", f"{self.ppl_engine:.4f}"),
                ("ppl ratio (engine / ref)", f"{self.ppl_ratio:.6f}")]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


@dataclass(frozen=True)
class Thresholds:
    """Gates for CI; None = not checked. A NaN metric fails every gate it is checked against."""

    min_top1: float | None = None
    max_kl: float | None = None
    max_ppl_ratio: float | None = None

    def failures(self, result: EvalResult) -> list[str]:
        """One message per failed gate, naming the metric, its value and the bound."""
        failed = []
        if self.min_top1 is not None and not result.top1_agreement >= self.min_top1:
            failed.append(f"top-1 agreement {result.top1_agreement:.4f} is below "
                          f"--min-top1 {self.min_top1}")
        if self.max_kl is not None and not result.mean_kl <= self.max_kl:
            failed.append(f"mean KL {result.mean_kl:.3e} is above --max-kl {self.max_kl}")
        if self.max_ppl_ratio is not None and not result.ppl_ratio <= self.max_ppl_ratio:
            failed.append(f"perplexity ratio {result.ppl_ratio:.6f} is above "
                          f"--max-ppl-ratio {self.max_ppl_ratio}")
        return failed
