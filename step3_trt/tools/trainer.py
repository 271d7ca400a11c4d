"""Training the reference Step-3 model (`Step3ForCausalLM`, unchanged) on a token stream.

Initialisation lives here, not in the model: matrices ~ N(0, 0.02), residual-branch output
projections scaled by 1/sqrt(2 * layers), RMSNorm weights 1, router weights small so routing
starts near uniform. The loss is next-token cross-entropy plus a switch-style load-balancing
term on every MoE router (captured with forward hooks, so the model code stays untouched).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from step3_trt.model.reference import MoE, Step3ForCausalLM

# Parameters that write into the residual stream: their init is scaled down with depth.
OUTPUT_PROJECTIONS = ("o_proj.weight", "down_proj.weight")


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    steps: int = 1000
    batch_size: int = 16  # windows per step
    seq_len: int = 256  # tokens per window, BOS included
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    aux_loss_coef: float = 0.01  # load-balancing loss weight
    init_std: float = 0.02


@dataclass
class TrainResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)  # LM loss per step
    expert_load: list[list[float]] = field(default_factory=list)  # per MoE layer, last step
    seconds: float = 0.0
    stopped_early: bool = False


def init_weights(model: Step3ForCausalLM, std: float, generator: torch.Generator) -> None:
    """Deterministic initialisation from `generator` (parameters visited in name order)."""
    layers = model.config.num_hidden_layers
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            elif name.endswith("moe.gate.weight"):
                nn.init.normal_(p, 0.0, std * 0.1, generator=generator)
            elif name.endswith(OUTPUT_PROJECTIONS):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * layers), generator=generator)
            else:
                nn.init.normal_(p, 0.0, std, generator=generator)


class RouterMonitor:
    """Records the router logits of every MoE layer during training forwards."""

    def __init__(self, model: Step3ForCausalLM):
        self.moes = [m for m in model.modules() if isinstance(m, MoE)]
        self.logits: list[torch.Tensor] = []
        self.handles = [moe.gate.register_forward_hook(self._hook) for moe in self.moes]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, module: nn.Module, args, output: torch.Tensor) -> None:
        if module.training:
            self.logits.append(output)

    def balance_loss(self) -> tuple[torch.Tensor, list[list[float]]]:
        """Mean over layers of E * sum_e f_e * p_e (f: share of top-k slots routed to expert e,
        p: mean router probability of e; 1.0 when balanced), and each layer's loads f."""
        losses, loads = [], []
        for logits, moe in zip(self.logits, self.moes):
            probs = logits.float().softmax(-1)  # [M, E]
            num_experts = probs.shape[-1]
            ids = probs.topk(moe.top_k, dim=-1).indices
            f = torch.bincount(ids.flatten(), minlength=num_experts).float() / ids.numel()
            losses.append(num_experts * (f * probs.mean(0)).sum())
            loads.append([round(float(x), 4) for x in f])
        self.logits.clear()
        zero = torch.zeros(())
        return (torch.stack(losses).mean() if losses else zero), loads


def batches(ids: torch.Tensor, seq_len: int, batch_size: int,
            generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless [batch_size, seq_len] windows of the token stream `ids`: each pass cuts the
    stream into consecutive windows from a random offset and visits them in a random order."""
    if len(ids) < seq_len * (batch_size + 1):
        raise ValueError(f"the training text has {len(ids)} tokens, too few for batches of "
                         f"{batch_size} x {seq_len}")
    while True:
        offset = int(torch.randint(0, seq_len, (1,), generator=generator))
        n = (len(ids) - offset) // seq_len
        chunks = ids[offset:offset + n * seq_len].view(n, seq_len)
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield chunks[order[i:i + batch_size]]


def lr_factor(step: int, s: TrainSettings) -> float:
    """Linear warmup, then cosine decay from 1 to `min_lr_ratio` at the last step."""
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1)))


def lm_loss(model: Step3ForCausalLM, window: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [B, T]: inputs `[BOS] + w[:-1]`, targets `w`."""
    bos = torch.full_like(window[:, :1], bos_id)
    logits = model(torch.cat([bos, window[:, :-1]], dim=1))
    return F.cross_entropy(logits.flatten(0, 1), window.flatten())


def train(model: Step3ForCausalLM, ids: torch.Tensor, bos_id: int, s: TrainSettings,
          deadline: float | None = None,
          on_step: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """Train `model` in place for `s.steps` AdamW steps (fewer if `deadline`, a time.monotonic()
    value, passes). `on_step(step, loss, lr)` is called after every step."""
    data = batches(ids, s.seq_len, s.batch_size, torch.Generator().manual_seed(s.seed + 1))
    decay = [p for n, p in sorted(model.named_parameters()) if p.dim() >= 2]
    no_decay = [p for n, p in sorted(model.named_parameters()) if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=s.betas)
    monitor = RouterMonitor(model)
    result = TrainResult(steps_done=0)
    start = time.monotonic()
    model.train()
    for step in range(s.steps):
        if deadline is not None and time.monotonic() > deadline:
            result.stopped_early = True
            break
        lr = s.lr * lr_factor(step, s)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = lm_loss(model, next(data), bos_id)
        balance, result.expert_load = monitor.balance_loss()
        opt.zero_grad(set_to_none=True)
        (loss + s.aux_loss_coef * balance).backward()
        nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        result.losses.append(float(loss.detach()))
        result.steps_done = step + 1
        if on_step is not None:
            on_step(step, result.losses[-1], lr)
    monitor.close()
    model.eval()
    result.seconds = time.monotonic() - start
    return result
