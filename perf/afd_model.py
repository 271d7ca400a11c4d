"""AFD performance model of Step-3: TPOT and tokens/s per GPU for attention/FFN splits.

    python perf/afd_model.py --paper                       # validation against arXiv 2507.19427
    python perf/afd_model.py --roofline [--gpu h100]       # projection from bytes/FLOPs/ceilings
    python perf/afd_model.py --measured perf/results/layers_h100.json [--gpu h100]
    python perf/afd_model.py --measured FILE --runtime [--placement balanced]

--runtime prices this project's runtime as built (placement, wire, transport, host time per
call) instead of the paper's idealized data plane. Each prints its tables and writes
perf/results/afd_model_<tag>.json (+ .png unless --no-plot). Formulas and the measured-times
format: docs/afd-model.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.afd import paper_deploy, paper_tables, projection, report, runtime_report  # noqa: E402
from perf.afd.checks import AfdInputError  # noqa: E402
from perf.afd.deployment import FANOUTS, Deployment  # noqa: E402
from perf.afd.hardware import hardware, preset_names  # noqa: E402
from perf.afd.layers_json import load_layer_times  # noqa: E402
from perf.afd.measured import Measured  # noqa: E402
from perf.afd.roofline import Roofline  # noqa: E402
from perf.afd.step3 import Step3Dims  # noqa: E402

PAPER_TGS = paper_deploy.HEADLINE.tgs
DTYPES = {"fp8": 1, "bf16": 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--paper", action="store_true", help="validate against the paper")
    mode.add_argument("--roofline", action="store_true", help="project from analytic times")
    mode.add_argument("--measured", metavar="JSON", help="project from measured layer times")
    ap.add_argument("--gpu", default="h100", choices=preset_names())
    ap.add_argument("--context", type=int, default=4096, help="context tokens per sequence")
    ap.add_argument("--micro-batches", default="3",
                    help="micro-batches per step; a list (1,2,3,4) keeps each split's best")
    ap.add_argument("--kv", choices=DTYPES, default="fp8", help="KV cache dtype")
    ap.add_argument("--weights", choices=DTYPES, default="fp8", help="weight dtype")
    ap.add_argument("--fanout", choices=FANOUTS, default=None,
                    help="instance (default): one copy per FFN instance (paper); rank: per FFN "
                         "GPU (not with --runtime, which prices --placement)")
    ap.add_argument("--oproj-tp", type=int, default=1, help="o_proj TP inside attention (paper 8)")
    ap.add_argument("--sla-ms", type=float, default=50.0)
    ap.add_argument("--splits", default=None,
                    help="comma-separated, e.g. 2A2F,3A2F (8-GPU instances) or 2+6 (GPUs of one "
                         "host); default: 1A1F ... 3A3F, and with --runtime also 1+7 ... 4+4")
    ap.add_argument("--hbm-eff", type=float, default=1.0, help="fraction of HBM ceiling")
    ap.add_argument("--ffn-hbm-eff", type=float, default=None, help="default: --hbm-eff")
    ap.add_argument("--flop-eff", type=float, default=1.0, help="fraction of GEMM ceiling")
    ap.add_argument("--net-eff", type=float, default=1.0, help="fraction of NIC bandwidth")
    ap.add_argument("--latency-us", type=float, default=None, help="link latency override")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--tag", default=None, help="output name: afd_model_<tag>.json/.png")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    runtime_report.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.runtime and args.paper:
        ap.error("--runtime needs layer times: --measured FILE or --roofline, not --paper")
    if args.runtime and args.fanout is not None:
        ap.error("--fanout is the idealized modes' option; --runtime prices --placement")
    args.fanout = args.fanout or "instance"
    return args


def run_paper(args: argparse.Namespace) -> dict:
    """Print and return the validation against the paper."""
    dims = Step3Dims()
    groups = {
        "closed-form numbers (Tables 2-3, 5-7, §5.1)":
            paper_tables.count_checks(dims) + paper_tables.cost_checks(dims),
        "stage budgets and §6 sizing": paper_tables.budget_checks(dims),
        "deployments (Table 8, §7.3) through the pipeline model":
            paper_deploy.deployment_checks(dims),
    }
    for title, checks in groups.items():
        print(f"\n== {title}\n{report.checks_table(checks)}")
    sens = paper_deploy.headline_sensitivity(dims)
    print("\n== 2A2F headline, one paper-input assumption changed at a time\n" + report.table(
        ["variant", "TPOT ms", "tok/s/GPU", "vs 4,039"],
        [[s["variant"], f"{s['tpot_ms']:.1f}", f"{s['tokens_per_s_per_gpu']:,.0f}",
          f"{s['vs_paper']:+.1%}"] for s in sens]))
    model, run = paper_deploy.paper_model(dims), paper_deploy.HEADLINE
    point = paper_deploy.evaluate(model, run.deployment(), run.per_gpu())
    print("\n== per-layer stations at the paper's 2A2F point, paper inputs\n"
          + report.stations_table(point, 50.0, dims.layers))
    base = replace(run.deployment(), sla_ms=args.sla_ms)
    results = projection.project(model, base, _splits(args), _micro(args))
    print(f"\n== splits under {args.sla_ms:g} ms, paper inputs (H800, 4K, FP8)\n"
          + report.splits_table(results, PAPER_TGS))
    checks = [c for g in groups.values() for c in g]
    failed = [c.name for c in checks if c.ok is False]
    print(f"\n{sum(c.ok is True for c in checks)} checks within tolerance, {len(failed)} outside"
          + (f": {failed}" if failed else ""))
    marks = [(f"paper {r.split} {r.tgs:,.0f}", r.batch / (r.tgs * r.deployment().gpu_count) * 1e3,
              r.tgs) for r in paper_deploy.RUNS[:1]]
    return {"mode": "paper", "model": _describe(model),
            "checks": {t: [c.to_json() for c in g] for t, g in groups.items()},
            "headline_sensitivity": sens, "paper_point": point.to_json(),
            "splits": [r.to_json() for r in results], "failed": failed,
            "_plot": (results, "Step-3 AFD model with the paper's inputs (H800, 4K, FP8)", marks)}


def run_projection(args: argparse.Namespace) -> dict:
    """Print and return a roofline or measured projection."""
    hw = hardware(args.gpu)
    if args.latency_us is not None:
        hw = replace(hw, link_latency_s=args.latency_us * 1e-6)
    roof = Roofline(hw, hbm_eff=args.hbm_eff, flop_eff=args.flop_eff, net_eff=args.net_eff,
                    ffn_hbm_eff=args.hbm_eff if args.ffn_hbm_eff is None else args.ffn_hbm_eff)
    kv, wb = DTYPES[args.kv], DTYPES[args.weights]
    model: Roofline | Measured = roof
    if args.measured:
        data = load_layer_times(args.measured)
        model, kv, wb = Measured(data, roof), data.kv_bytes, data.weight_bytes
    micro = _micro(args)
    base = Deployment(2, 2, micro_batches=3 if 3 in micro else micro[0], context=args.context,
                      kv_bytes=kv, weight_bytes=wb, fanout=args.fanout, oproj_tp=args.oproj_tp,
                      sla_ms=args.sla_ms)
    if args.runtime:
        return runtime_report.run_runtime(args, model, roof, base, _splits(args), micro)
    dims = model.dims
    results = projection.project(model, base, _splits(args), micro)
    paper_pt = projection.at_paper_point(model, base)
    best = next(r for r in results if r.split == "2A2F").search.point \
        if "2A2F" in _splits(args) else None
    label = f"{model.label} {hw.name}"
    print(f"== {label}: {hw.source}")
    for title, pt in (("the paper's batch shape (128 seqs/GPU/micro-batch)", paper_pt),
                      (f"the largest batch under {args.sla_ms:g} ms", best)):
        if pt is not None:
            print(f"\n== per-layer table, 2A2F at {title}\n"
                  + report.stations_table(pt, args.sla_ms, dims.layers))
    print(f"\n== splits under {args.sla_ms:g} ms, context {args.context}\n"
          + report.splits_table(results, PAPER_TGS))
    sweep = projection.context_sweep(model, base)
    print("\n== 2A2F against context\n" + report.context_table(sweep))
    if best is not None:
        print(f"\nprojected 2A2F: {best.tokens_per_s_per_gpu:,.0f} tokens/s/GPU at TPOT "
              f"{best.tpot_ms:.1f} ms (paper: {PAPER_TGS:,.0f} on H800)")
    kv_name = "fp8" if kv == 1 else "bf16"
    title = f"Step-3 AFD, {label}, {args.context // 1024}K context, KV {kv_name}"
    return {"mode": "measured" if args.measured else "roofline", "model": _describe(roof),
            "measured_file": args.measured, "deployment": _dep_json(base),
            "paper_point": paper_pt.to_json() if paper_pt else None,
            "best_2a2f": best.to_json() if best else None,
            "splits": [r.to_json() for r in results], "context_sweep": sweep,
            "paper_tokens_per_s_per_gpu": PAPER_TGS,
            "_plot": (results, title, [(f"paper 2A2F {PAPER_TGS:,.0f} (H800)", 47.5, PAPER_TGS)])}


def _splits(args: argparse.Namespace) -> tuple[str, ...]:
    if args.splits is None:
        return projection.DEFAULT_SPLITS + (runtime_report.HOST_SPLITS if args.runtime else ())
    return tuple(s.strip() for s in args.splits.split(",") if s.strip())


def _micro(args: argparse.Namespace) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(args.micro_batches).split(",") if v.strip())
    except ValueError:
        raise AfdInputError(f"--micro-batches must be integers, got {args.micro_batches!r}") \
            from None
    if not values or min(values) < 1:
        raise AfdInputError(f"--micro-batches must be >= 1, got {args.micro_batches!r}")
    return values


def _describe(model: Roofline) -> dict:
    d = {k: v for k, v in model.__dict__.items() if k not in ("hw", "dims")}
    return {**d, "hardware": dict(model.hw.__dict__), "dims": dict(model.dims.__dict__)}


def _dep_json(dep: Deployment) -> dict:
    return {**{k: v for k, v in dep.__dict__.items() if k != "wire"}, "wire": dep.wire.__dict__}


def _tag(args: argparse.Namespace) -> str:
    if args.tag:
        return args.tag
    if args.paper:
        return "paper"
    tag = f"roofline_{args.gpu}" if args.roofline else f"measured_{Path(args.measured).stem}"
    if args.runtime:
        tag = runtime_report.tag(args, tag)
    extras = [(args.context != 4096, f"ctx{args.context // 1024}k"),
              (args.kv != "fp8", f"kv{args.kv}"), (args.fanout != "instance", args.fanout),
              (args.micro_batches != "3", "m" + str(args.micro_batches).replace(",", ""))]
    return "_".join([tag] + [s for cond, s in extras if cond])


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 when a paper check fails)."""
    args = parse_args(argv)
    try:
        result = run_paper(args) if args.paper else run_projection(args)
        results, title, marks = result.pop("_plot")
        tag = _tag(args)
        path = report.write_json(args.out / f"afd_model_{tag}.json", result)
        print(f"\nwrote {path}")
        if not args.no_plot:
            png = report.plot_curves(args.out / f"afd_model_{tag}.png", results, title,
                                     args.sla_ms, marks)
            print(f"wrote {png}")
    except AfdInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
