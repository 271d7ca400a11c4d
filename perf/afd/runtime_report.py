"""``perf/afd_model.py --runtime``: the runtime as built, its inputs, the placement study and
the headline next to the paper and to the instance-fanout model (docs/afd-model.md §10)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .checks import AfdInputError, nonnegative
from .deployment import Deployment
from .hardware import GIB
from .links import TRANSPORTS, transport, with_link
from .measured import Measured
from .pipeline import OperatingPoint, best_under_sla, evaluate
from .placement import LABELS, PLACEMENTS, ffn_weight_bytes
from .projection import PAPER_PER_GPU, at_paper_point, project
from .report import splits_table, stations_table, table
from .roofline import Roofline
from .routing import UNIFORM, load_routing, uniform_routing
from .step3 import Step3Dims
from .runtime import DEFAULT_HOST_OVERHEAD_US, DEFAULT_OP_US, DEFAULT_ROUTING, WIRES, \
    RuntimeModel, RuntimeSpec, make_sampler, wire_format

HOST_SPLITS = ("1+7", "2+6", "3+5", "4+4")  # one 8-GPU host
WIRE_NAMES = {1: "FP8", 2: "BF16", 4: "fp32"}
HOST_OVERHEAD_SWEEP = (0.0, 30.0, DEFAULT_HOST_OVERHEAD_US, 200.0)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The runtime mode's options."""
    g = ap.add_argument_group("runtime mode (--runtime, with --measured or --roofline)")
    g.add_argument("--runtime", action="store_true",
                   help="price this project's runtime as built (placement, transport, wire)")
    g.add_argument("--placement", choices=PLACEMENTS, default="balanced",
                   help="shared expert / dense MLP placement: sliced (P0), top1 (P1), "
                        "balanced (P2), instance (P3)")
    g.add_argument("--transport", choices=TRANSPORTS, default="torch")
    g.add_argument("--wire", choices=WIRES, default="engine",
                   help="engine: FP8 for FP8 engines, BF16 for BF16 engines")
    g.add_argument("--host-overhead-us", default=str(DEFAULT_HOST_OVERHEAD_US),
                   help="host µs per (layer, micro-batch) call: one value, or attention,FFN")
    g.add_argument("--routing", default=str(DEFAULT_ROUTING),
                   help="routing statistics (step3-afd-routing/1) or 'uniform'")
    g.add_argument("--instance-gpus", type=int, default=8, help="FFN instance size (instance)")
    g.add_argument("--op-us", type=float, default=DEFAULT_OP_US,
                   help="fixed µs of one data-plane kernel (assumed)")


def spec_from_args(args: argparse.Namespace, dims: Step3Dims) -> RuntimeSpec:
    """The RuntimeSpec the command line describes."""
    try:
        values = [float(v) for v in str(args.host_overhead_us).split(",")]
    except ValueError:
        raise AfdInputError(f"--host-overhead-us must be numbers, got "
                            f"{args.host_overhead_us!r}") from None
    if len(values) not in (1, 2):
        raise AfdInputError("--host-overhead-us takes one value or attention,FFN")
    host = (values[0], values[-1])
    routing = uniform_routing(dims.experts, dims.top_k) if args.routing == UNIFORM \
        else load_routing(args.routing)
    tr = with_link(transport(args.transport), None, args.latency_us)
    if args.net_eff != 1.0:
        tr = replace(tr, inter=replace(tr.inter, bandwidth=tr.inter.bandwidth * args.net_eff))
    return RuntimeSpec(placement=args.placement, transport=tr, wire=args.wire,
                       host_overhead_us=host, routing=routing,
                       instance_gpus=args.instance_gpus, op_us=nonnegative("--op-us", args.op_us))


def run_runtime(args: argparse.Namespace, base: Roofline | Measured, roof: Roofline,
                base_dep: Deployment, splits: tuple[str, ...], micro: tuple[int, ...]) -> dict:
    """Print and return the runtime projection, the placement study and the sensitivity."""
    spec = spec_from_args(args, base.dims)
    sampler = make_sampler(spec, base.dims)
    dep = replace(base_dep, wire=wire_format(spec.wire, base_dep.weight_bytes))
    model = RuntimeModel(base, spec, sampler)
    print(f"== runtime model: {model.label}\n" + inputs_text(inputs_rows(model, dep, args)))
    paper_pt = at_paper_point(model, dep)
    if paper_pt is not None:
        print("\n== per-layer stations, 2A2F at the paper's batch shape (128 seqs/GPU/mb)\n"
              + stations_table(paper_pt, args.sla_ms, base.dims.layers))
    results = project(model, dep, splits, micro)
    best = next((r.search.point for r in results if r.split == "2A2F"), None)
    if best is not None:
        print(f"\n== per-layer stations, 2A2F at the largest batch under {args.sla_ms:g} ms\n"
              + stations_table(best, args.sla_ms, base.dims.layers))
    print(f"\n== splits under {args.sla_ms:g} ms (2+6 etc.: one 8-GPU host)\n"
          + splits_table(results, 4039.0))
    floors = floor_rows(base, roof, dep) if isinstance(base, Measured) else []
    if floors:
        print("\n== measured stages against their floors (2A2F paper shape; floor: each kernel "
              "at the larger of its byte and FLOP floors at the GPU's ceilings)\n"
              + table(["stage", "measured µs", "bytes only µs", "FLOPs only µs", "floor µs",
                       "of floor"], floors))
    inst_dep = replace(base_dep, fanout="instance")
    inst_best = best_under_sla(base, inst_dep.with_split("2A2F")).point
    inst_paper = at_paper_point(base, inst_dep)
    headline = headline_rows(model.label, best, paper_pt, inst_best, inst_paper)
    print("\n== 2A2F headline\n" + table(["what", "TPOT ms", "tok/s/GPU", "note"], headline))
    study = placement_study(base, roof, spec, sampler, dep)
    print("\n== placements x transports, 2A2F (FFN weights per rank; bytes per token of the "
          "micro-batch, all copies)\n" + table(STUDY_HEADERS, [r["cells"] for r in study]))
    sens = sensitivity(base, spec, sampler, dep)
    print("\n== sensitivity of 2A2F (this spec, one input changed)\n"
          + table(["variant", "TPOT ms @128", "tok/s/GPU @128", f"best <= {args.sla_ms:g} ms"],
                  [r["cells"] for r in sens]))
    if spec.host_overhead_us == (DEFAULT_HOST_OVERHEAD_US, DEFAULT_HOST_OVERHEAD_US):
        print(f"\nnote: host overhead per call is the assumed {DEFAULT_HOST_OVERHEAD_US:g} µs; "
              "the runtime-core measurement (issue 16, item 6) does not exist yet")
    return {"mode": "runtime", "runtime": spec_json(spec), "layer_times": base.label,
            "measured_file": args.measured, "deployment": {**base_dep.__dict__,
                                                            "wire": dep.wire.__dict__},
            "inputs": [dict(zip(("input", "value", "source"), r))
                       for r in inputs_rows(model, dep, args)],
            "paper_point": paper_pt.to_json() if paper_pt else None,
            "best_2a2f": best.to_json() if best else None,
            "floors": [dict(zip(("stage", "measured_us", "bytes_only_us", "flops_only_us",
                                 "floor_us", "of_floor"), r)) for r in floors],
            "instance_fanout": {"best_2a2f": inst_best.to_json() if inst_best else None,
                                "paper_point": inst_paper.to_json() if inst_paper else None},
            "headline": [dict(zip(("what", "tpot_ms", "tokens_per_s_per_gpu", "note"), r))
                         for r in headline],
            "splits": [r.to_json() for r in results],
            "placement_study": [r["json"] for r in study],
            "sensitivity": [r["json"] for r in sens], "paper_tokens_per_s_per_gpu": 4039.0,
            "_plot": (results, f"Step-3 AFD, {model.label}",
                      [("paper 2A2F 4,039 (H800)", 47.5, 4039.0)]
                      + ([(f"instance fanout {inst_best.tokens_per_s_per_gpu:,.0f}",
                           inst_best.tpot_ms, inst_best.tokens_per_s_per_gpu)]
                         if inst_best else []))}


def inputs_rows(model: RuntimeModel, dep: Deployment, args: argparse.Namespace) -> list[list]:
    """Every input of the runtime model with its value and where it comes from."""
    spec, tr, d = model.spec, model.spec.transport, model.dims
    w = dep.wire
    host = spec.host_overhead_us
    host_src = ("ASSUMED (from perf/results/runtime_decode_h100.json: 1.80 ms / 20 graph calls "
                "in-process); to be replaced by the runtime-core measurement, issue 16 item 6"
                if host == (DEFAULT_HOST_OVERHEAD_US,) * 2 else "command line")
    rows = [
        ["layer times", args.measured or f"roofline {model.roof.hw.name}",
         model.roof.hw.source if args.measured is None else "measured (step3-afd-layers/1)"],
        ["placement", f"{LABELS[spec.placement]} {spec.placement}", "placement.py"],
        ["transport", tr.name, tr.source],
        ["  link inside a host", f"{tr.intra.name}: {tr.intra.bandwidth / 1e9:.1f} GB/s, "
         f"{tr.intra.latency_us:g} µs, {tr.intra.per_message_us:g} µs/message", tr.intra.source],
        ["  link between hosts", f"{tr.inter.name}: {tr.inter.bandwidth / 1e9:.1f} GB/s, "
         f"{tr.inter.latency_us:g} µs, {tr.inter.per_message_us:g} µs/message", tr.inter.source],
        ["wire", f"{spec.wire} ({WIRE_NAMES[w.hidden_bytes]} hidden states): A->F "
         f"{w.a2f_bytes_per_token(d.hidden, d.top_k)} B/token-copy "
         f"(+{w.id_bytes + w.weight_bytes} B for the shared slot in P1/P2), F->A "
         f"{w.f2a_bytes_per_token(d.hidden)} B", "docs/afd-model.md §10.1"],
        ["host overhead per call", f"attention {host[0]:g} µs, FFN {host[1]:g} µs", host_src],
        ["routing", f"{spec.routing.source}: max/mean expert share per layer "
         + ", ".join(f"{x:.2f}" for x in spec.routing.max_over_mean()),
         "perf/afd/measure_routing.py (docs §11)" if spec.routing.source != UNIFORM
         else "uniform"],
        ["data-plane kernel", f"{spec.op_us:g} µs each + bytes at {model.roof.hw.hbm_bw / 1e12:.2f}"
         f" TB/s", "ASSUMED fixed cost; bytes counted (dataplane.py)"],
        ["hosts", f"{spec.host_gpus} GPUs per host; xAyF: attention and FFN instances on "
         f"separate hosts", "topology assumption"],
    ]
    if isinstance(model.base, Measured):
        rates = model.measured_ffn(dep, "moe").rates
        rows.append(["FFN weight streaming", rates.source, "measured kernel benchmarks"])
        tables = ", ".join(f"{t.kind} at {t.ffn_gpus} ranks" for t in model.base.data.ffn)
        rows.append(["FFN tables", tables, "splits with other FFN rank counts convert the "
                     "first table of the kind by equivalent work (docs §10.3)"])
    return rows


def floor_rows(base: Measured, roof: Roofline, dep: Deployment) -> list[list]:
    """Measured attention and FFN layers at the paper's shape against max(bytes, FLOPs) floors
    (the FFN at the measured table's rank count: sliced shared expert, uniform routing)."""
    fast = 1e30  # a ceiling that never binds
    by_bytes = replace(roof, hw=replace(roof.hw, bf16_flops=fast, fp8_flops=fast))
    by_flops = replace(roof, hw=replace(roof.hw, hbm_bw=fast))
    d2 = dep.with_split("2A2F")
    rows = []
    att = base.data.attention.at(PAPER_PER_GPU, d2.context)
    if att is not None:
        rows.append(_floor_row(f"attention ({PAPER_PER_GPU} seqs, {d2.context} ctx)", att,
                               by_bytes.attention_us(d2, PAPER_PER_GPU, "moe"),
                               by_flops.attention_us(d2, PAPER_PER_GPU, "moe"),
                               roof.attention_us(d2, PAPER_PER_GPU, "moe")))
    tokens = d2.micro_batch(PAPER_PER_GPU)
    for t in base.data.ffn:
        us = t.at(tokens)
        if us is not None:
            ref = replace(d2, ffn_instances=1, ffn_gpus=t.ffn_gpus)
            rows.append(_floor_row(f"ffn {t.kind} ({tokens} tokens, 1 of {t.ffn_gpus})", us,
                                   by_bytes.ffn_us(ref, tokens, t.kind),
                                   by_flops.ffn_us(ref, tokens, t.kind),
                                   roof.ffn_us(ref, tokens, t.kind)))
    return rows


def _floor_row(name: str, measured: float, byte_floor: float, flop_floor: float,
               floor: float) -> list:
    """``floor``: the roofline, each kernel at the larger of its two floors."""
    return [name, f"{measured:.0f}", f"{byte_floor:.0f}", f"{flop_floor:.0f}", f"{floor:.0f}",
            f"{floor / measured:.0%}"]


def inputs_text(rows: list[list]) -> str:
    """One input per line, its source indented below it."""
    return "\n".join(f"{name.strip()}: {value}\n    ({source})" for name, value, source in rows)


STUDY_HEADERS = ["placement", "transport", "FFN GB/rank fp8|bf16", "fanout moe|dense",
                 "A->F B/tok", "F->A B/tok", "FFN busiest/mean", "a2f|f2a µs @128",
                 "TPOT ms @128", "tok/s/GPU @128", "best tok/s/GPU (seqs, TPOT)", "layer times"]


def placement_study(base, roof: Roofline, spec: RuntimeSpec, sampler, dep: Deployment) -> list:
    """Every placement on every transport at 2A2F, with the given and with roofline times."""
    rows = []
    d2 = dep.with_split("2A2F")
    bases = [(base.label, base)] + ([("roofline", roof)] if base is not roof else [])
    for label, b in bases:
        for placement in PLACEMENTS:
            for tname in TRANSPORTS:
                s = replace(spec, placement=placement,
                            transport=spec.transport if tname == spec.transport.name
                            else transport(tname))
                m = RuntimeModel(b, s, sampler)
                rows.append(_study_row(m, d2, label))
    return rows


def _study_row(m: RuntimeModel, dep: Deployment, label: str) -> dict:
    d = m.dims
    gb = [ffn_weight_bytes(m.spec.placement, d, dep.ffn_gpu_count, wb) / GIB for wb in (1, 2)]
    fig = m.figures(dep, PAPER_PER_GPU, "moe")
    dense = m.figures(dep, PAPER_PER_GPU, "dense")
    pt = evaluate(m, dep, PAPER_PER_GPU)
    res = best_under_sla(m, dep)
    best = res.point
    best_txt = (f"{best.tokens_per_s_per_gpu:,.0f} ({best.per_gpu}, {best.tpot_ms:.1f} ms)"
                if best else f"none ({res.bound})")
    cells = [f"{LABELS[m.spec.placement]} {m.spec.placement}", m.spec.transport.name,
             f"{gb[0]:.1f} | {gb[1]:.1f}", f"{fig['fanout']:.2f} | {dense['fanout']:.2f}",
             f"{fig['a2f_bytes_per_token']:,.0f}", f"{fig['f2a_bytes_per_token']:,.0f}",
             f"{fig['ffn_imbalance']:.3f}", f"{fig['a2f_us']:.0f} | {fig['f2a_us']:.0f}",
             f"{pt.tpot_ms:.1f}" if pt else "-",
             f"{pt.tokens_per_s_per_gpu:,.0f}" if pt else "-", best_txt, label]
    return {"cells": cells, "json": {
        "placement": m.spec.placement, "label": LABELS[m.spec.placement],
        "transport": m.spec.transport.name, "layer_times": label,
        "ffn_weight_gib_fp8": gb[0], "ffn_weight_gib_bf16": gb[1],
        "moe": fig, "dense": dense, "paper_point": pt.to_json() if pt else None,
        "best": best.to_json() if best else None, "bound": res.bound}}


def sensitivity(base, spec: RuntimeSpec, sampler, dep: Deployment) -> list:
    """2A2F of ``spec`` with one input changed at a time."""
    d2 = dep.with_split("2A2F")
    variants = [(f"host overhead {h:g} µs per call", replace(spec, host_overhead_us=(h, h)), None)
                for h in HOST_OVERHEAD_SWEEP]
    uniform = uniform_routing(base.dims.experts, base.dims.top_k)
    variants.append(("uniform routing", replace(spec, routing=uniform), "new"))
    if d2.weight_bytes == 1:
        variants.append(("BF16 hidden states on the wire", replace(spec, wire="bf16"), None))
    rows = []
    for name, s, fresh in variants:
        m = RuntimeModel(base, s, None if fresh else sampler)
        dd = replace(d2, wire=wire_format(s.wire, d2.weight_bytes))
        pt, res = evaluate(m, dd, PAPER_PER_GPU), best_under_sla(m, dd)
        b = res.point
        rows.append({"cells": [name, f"{pt.tpot_ms:.1f}" if pt else "-",
                               f"{pt.tokens_per_s_per_gpu:,.0f}" if pt else "-",
                               f"{b.tokens_per_s_per_gpu:,.0f} ({b.per_gpu} seqs)" if b
                               else f"none ({res.bound})"],
                     "json": {"variant": name, "paper_point": pt.to_json() if pt else None,
                              "best": b.to_json() if b else None, "bound": res.bound}})
    return rows


def headline_rows(label: str, best: OperatingPoint | None, paper_pt: OperatingPoint | None,
                  inst_best: OperatingPoint | None,
                  inst_paper: OperatingPoint | None) -> list[list]:
    """The runtime's 2A2F next to the paper and the instance-fanout model."""
    def cells(what, p, note):
        return [what, f"{p.tpot_ms:.1f}" if p else "-",
                f"{p.tokens_per_s_per_gpu:,.0f}" if p else "none", note]
    return [cells("this runtime, best under the SLA", best,
                  f"{best.per_gpu} seqs/GPU/mb" if best else "no batch meets the SLA"),
            cells("this runtime, paper's batch shape", paper_pt, "128 seqs/GPU/mb"),
            ["paper (H800, Table 8)", "47.5", "4,039", "arXiv 2507.19427"],
            cells("instance-fanout model, best under the SLA", inst_best,
                  "same layer times, idealized data plane"),
            cells("instance-fanout model, paper's batch shape", inst_paper, "128 seqs/GPU/mb")]


def spec_json(spec: RuntimeSpec) -> dict:
    """The spec as JSON (routing by source, transport by its links)."""
    tr = spec.transport
    return {"placement": spec.placement, "label": LABELS[spec.placement], "wire": spec.wire,
            "host_overhead_us": list(spec.host_overhead_us), "routing": spec.routing.source,
            "instance_gpus": spec.instance_gpus, "host_gpus": spec.host_gpus,
            "op_us": spec.op_us,
            "transport": {"name": tr.name, "staged": tr.staged, "pcie_GBps": tr.pcie_bw / 1e9,
                          "copy_latency_us": tr.copy_latency_us, "source": tr.source,
                          "intra": _link_json(tr.intra), "inter": _link_json(tr.inter)}}


def _link_json(link) -> dict:
    return {"name": link.name, "GBps": link.bandwidth / 1e9, "latency_us": link.latency_us,
            "per_message_us": link.per_message_us, "source": link.source,
            "measured_table": link.table is not None}


def tag(args: argparse.Namespace, base_tag: str) -> str:
    """``runtime_<base>`` plus the non-default choices."""
    extras = [(args.placement != "balanced", args.placement),
              (args.transport != "torch", args.transport), (args.wire != "engine", args.wire),
              (args.host_overhead_us != str(DEFAULT_HOST_OVERHEAD_US),
               "host" + str(args.host_overhead_us).replace(",", "-")),
              (args.routing != str(DEFAULT_ROUTING), Path(args.routing).stem)]
    return "_".join(["runtime", base_tag] + [s for cond, s in extras if cond])

