"""The paper's deployments (§7.3, Table 8, Table 9) through the pipeline model.

"Paper inputs" means: H800 peaks from Table 4, the measured MFA layer line of Table 9 for
attention, the 40 GB/s per NIC the paper measured (§5.4), FFN weight streaming at 50% of HBM
bandwidth (the paper's own FFN sizing assumption, §6), o_proj TP=8 (§6 fn. 7), TP collectives
inside each FFN instance (§7.1) over H800 NVLink. docs/afd-model.md §7 discusses each choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .deployment import Deployment, WireFormat
from .hardware import hardware
from .pipeline import evaluate, tokens_per_s_per_gpu
from .roofline import Roofline
from .step3 import Step3Dims
from .validation import Check

# Table 9: one Step-3 MFA layer (linear projections included) on H800, 4 GPUs, total batch
# 256 (64 sequences per GPU, DP attention), BF16 KV: 281 us at 8K, 791 us at 32K.
TABLE9_SEQS, TABLE9 = 64, ((8192, 281.0), (32768, 791.0))


@dataclass(frozen=True)
class PaperRun:
    """One row of Table 8."""

    label: str
    split: str
    context: int
    kv_bytes: int
    batch: int
    tgs: float  # reported peak tokens/s per GPU
    micro_batches: int = 3

    def deployment(self) -> Deployment:
        """The run as a Deployment (8-GPU instances, FP8 GEMMs, o_proj TP=8)."""
        return Deployment(1, 1, context=self.context, kv_bytes=self.kv_bytes,
                          micro_batches=self.micro_batches, oproj_tp=8).with_split(self.split)

    def per_gpu(self) -> int:
        """Sequences per attention GPU per micro-batch (128 for 2A2F)."""
        dep = self.deployment()
        return self.batch // (self.micro_batches * dep.attn_gpu_count)


RUNS = (PaperRun("Step-3 FP8 attention, 4K", "2A2F", 4096, 1, 6144, 4039.0),
        PaperRun("Step-3 BF16 attention, 4K", "3A2F", 4096, 2, 6048, 3321.0),
        PaperRun("Step-3 FP8 attention, 8K", "4A2F", 8192, 1, 6144, 2643.0))
HEADLINE = RUNS[0]
TOLERANCE = {"2A2F": 0.05, "3A2F": 0.10, "4A2F": 0.10}


def table9_line(dims: Step3Dims) -> tuple[float, float]:
    """(µs at zero KV, µs per MB of KV) through Table 9's two H800 points."""
    (c0, t0), (c1, t1) = TABLE9
    kv = [TABLE9_SEQS * c * dims.kv_elems_per_token() * 2 / 1e6 for c in (c0, c1)]
    slope = (t1 - t0) / (kv[1] - kv[0])
    return t0 - slope * kv[0], slope


def paper_model(dims: Step3Dims | None = None) -> Roofline:
    """Stage times from the paper's own inputs (module docstring)."""
    dims = dims or Step3Dims()
    return Roofline(hardware("h800"), dims=dims, attention_fit=table9_line(dims),
                    ffn_hbm_eff=0.5, net_eff=0.8, include_head=False, label="paper inputs")


def peak_model(dims: Step3Dims | None = None) -> Roofline:
    """Pure roofline at the H800's Table 4 peaks (an upper bound on throughput)."""
    return Roofline(hardware("h800"), dims=dims or Step3Dims(), include_head=False,
                    label="H800 peaks")


def deployment_checks(dims: Step3Dims | None = None) -> list[Check]:
    """Table 8 and §7.3 through the model."""
    dims = dims or Step3Dims()
    model, rows = paper_model(dims), []
    for run in RUNS:
        dep = run.deployment()
        rows.append(Check(f"implied TPOT of {run.split} ({run.label})", "Table 8", None,
                          run.batch / (run.tgs * dep.gpu_count) * 1e3, "ms", None,
                          "batch / (TGS x GPUs): the peak minute ran below the 50 ms SLA"))
    rows.append(Check("implied TPOT of the 3,910 long-term average", "§7.3", None,
                      HEADLINE.batch / (3910 * 32) * 1e3, "ms", None))
    budget_tpot_ms = dims.layers * 3 * 272e-3
    rows.append(Check("2A2F TGS with every stage at the 272 us budget", "§7.3 / §6", HEADLINE.tgs,
                      tokens_per_s_per_gpu(HEADLINE.batch, budget_tpot_ms, 32), "tok/s/GPU",
                      0.05, f"TPOT = 61 x 3 x 272 us = {budget_tpot_ms:.1f} ms"))
    for run in RUNS:
        p = evaluate(model, run.deployment(), run.per_gpu())
        rows.append(Check(f"{run.split} TGS, paper inputs ({run.label})", "Table 8", run.tgs,
                          p.tokens_per_s_per_gpu, "tok/s/GPU", TOLERANCE[run.split],
                          f"model TPOT {p.tpot_ms:.1f} ms at batch {p.batch}"))
    base = evaluate(model, HEADLINE.deployment(), HEADLINE.per_gpu())
    for split, ctx, paper in (("4A2F", 8192, 2693.0), ("16A2F", 32768, 898.0)):
        dep = replace(HEADLINE.deployment().with_split(split), context=ctx)
        p = evaluate(model, dep, HEADLINE.batch // (3 * dep.attn_gpu_count))
        rows.append(Check(f"{split} @{ctx // 1024}K / 2A2F @4K TGS ratio", "§7.3 extrapolation",
                          paper / HEADLINE.tgs, p.tokens_per_s_per_gpu / base.tokens_per_s_per_gpu,
                          "", 0.01, f"paper {paper:.0f} = 4039 x 4 / {dep.gpu_count // 8}"))
    rows += upcycled_checks(dims)
    peak = peak_model(dims)
    p = evaluate(peak, HEADLINE.deployment(), HEADLINE.per_gpu())
    rows.append(Check("2A2F TGS at H800 peaks (roofline bound)", "Table 4 inputs", HEADLINE.tgs,
                      p.tokens_per_s_per_gpu, "tok/s/GPU", None,
                      f"TPOT {p.tpot_ms:.1f} ms: the paper's run is at "
                      f"{HEADLINE.tgs / p.tokens_per_s_per_gpu:.0%} of this bound"))
    rows.append(Check("DSv3 TGS (EP, 128 GPUs)", "Table 8", 2324.0, None, "tok/s/GPU", None,
                      "not an AFD deployment; the paper gives none of its stage times"))
    return rows


def upcycled_checks(dims: Step3Dims) -> list[Check]:
    """§7.3 "scaling Step-3 to > 600B": the network-limited micro-batch and its throughput."""
    # the paper counts payload only: "8-bit dispatch, 16-bit combine"
    payload = WireFormat(scale_bytes=0, id_bytes=0, weight_bytes=0)
    dep = replace(Deployment(3, 4, oproj_tp=8), wire=payload)
    round_trip = (payload.a2f_bytes_per_token(dims.hidden, dims.top_k)
                  + payload.f2a_bytes_per_token(dims.hidden)) * dep.ffn_instances
    per_gpu = 272e-6 * 40e9 / round_trip  # tokens an attention GPU may send per 272 us
    rows = [Check("3A4F network-limited micro-batch (400Gbps x 8 at 40 GB/s)", "§7.3", 3072,
                  per_gpu * dep.attn_gpu_count, "tok", 0.02,
                  "A->F + F->A of one micro-batch within one 272 us stage")]
    rows.append(Check("3A4F TGS at 50 ms, 3 x 3072", "§7.3", 3291.0,
                      tokens_per_s_per_gpu(3 * 3072, 50.0, dep.gpu_count), "tok/s/GPU", 0.001))
    up = paper_model(replace(dims, experts=2 * dims.experts))
    p = evaluate(up, Deployment(3, 4, oproj_tp=8), 128)
    rows.append(Check("3A4F TGS, paper inputs (96 experts)", "§7.3", 3291.0,
                      p.tokens_per_s_per_gpu, "tok/s/GPU", None,
                      f"TPOT {p.tpot_ms:.1f} ms: the FFN host's collectives at 3,072 tokens "
                      f"exceed the paper's 'same load' assumption"))
    return rows


def headline_sensitivity(dims: Step3Dims | None = None) -> list[dict]:
    """The 2A2F headline under the paper inputs with one assumption changed at a time."""
    dims = dims or Step3Dims()
    base, run = paper_model(dims), HEADLINE
    h800 = base.hw
    variants = {
        "paper inputs (as above)": base,
        "link latency 0 us": replace(base, hw=replace(h800, link_latency_s=0.0)),
        "link latency 20 us": replace(base, hw=replace(h800, link_latency_s=20e-6)),
        "NIC at 50 GB/s (no derating)": replace(base, net_eff=1.0),
        "no collectives inside the FFN host (EP dispatch)": replace(base, intra_collectives=False),
        "FFN at 100% of HBM bandwidth": replace(base, ffn_hbm_eff=1.0),
        "attention at the H800 roofline": replace(base, attention_fit=None),
    }
    out = []
    for name, model in variants.items():
        p = evaluate(model, run.deployment(), run.per_gpu())
        out.append({"variant": name, "tpot_ms": p.tpot_ms, "tokens_per_s_per_gpu":
                    p.tokens_per_s_per_gpu, "vs_paper": p.tokens_per_s_per_gpu / run.tgs - 1})
    return out
