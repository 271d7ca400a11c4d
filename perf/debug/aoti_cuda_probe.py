"""Find what crashes when CUDA AOTInductor engines load (GPU machine only).

    python perf/debug/aoti_cuda_probe.py            # every probe, each in its own process

Probes: a trivial Linear package; each plugin op alone in a package; tiny CUDA engines built in
one process and each graph package loaded (and run) in a fresh one; then a whole RankEngine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def compile_module(module, args, path: Path, dynamic=None) -> None:
    with torch.no_grad():
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def probe_trivial(out: Path) -> None:
    lin = torch.nn.Linear(64, 32).cuda().bfloat16()
    compile_module(lin, (torch.randn(8, 64, device="cuda", dtype=torch.bfloat16),),
                   out / "trivial.pt2")


class OneOp(torch.nn.Module):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self, *args):
        import plugins  # noqa: F401
        return getattr(torch.ops.step3, self.name)(*args)


def probe_ops(out: Path) -> list[str]:
    import plugins  # noqa: F401
    bf, dev = torch.bfloat16, "cuda"
    H, D, P, NB, N = 256, 128, 16, 8, 4
    i32 = dict(dtype=torch.int32, device=dev)
    kc, vc = torch.zeros(NB, P, D, dtype=bf, device=dev), torch.zeros(NB, P, D, dtype=bf, device=dev)
    q = torch.randn(3, N, D, dtype=bf, device=dev)
    tables = torch.arange(6, **i32).view(3, 2)
    lens = torch.tensor([5, 17, 9], **i32)
    cases = {
        "mfa_decode": (q, kc, vc, tables, lens),
        "mfa_prefill": (q, kc, vc, tables, lens, torch.arange(4, **i32)),
        "moe_experts": (torch.randn(5, H, dtype=bf, device=dev),
                        torch.randint(0, 4, (5, 2), **i32), torch.rand(5, 2, dtype=bf, device=dev),
                        torch.randn(4, 64, H, dtype=bf, device=dev) * 0.05,
                        torch.randn(4, 64, H, dtype=bf, device=dev) * 0.05,
                        torch.randn(4, H, 64, dtype=bf, device=dev) * 0.05),
    }
    names = []
    for name, args in cases.items():
        compile_module(OneOp(name), args, out / f"op_{name}.pt2")
        torch.save([a.cpu() for a in args], out / f"op_{name}.args")
        names.append(name)
    return names


def load_and_run(path: str, args_file: str | None) -> None:
    import plugins  # noqa: F401
    runner = torch._inductor.aoti_load_package(path)
    print("loaded", path, flush=True)
    if args_file:
        args = [a.cuda() for a in torch.load(args_file, weights_only=True)]
        out = runner(*args)
        torch.cuda.synchronize()
        print("ran", type(out).__name__, flush=True)


def build_engines(out: Path) -> Path:
    from step3_trt.build_config import BuildConfig
    from step3_trt.convert.convert import convert
    from step3_trt.engine.build import build_engines as build
    from step3_trt.make_checkpoint import make_random_checkpoint
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml").to_dict()
    raw.update(name="tiny-cuda-bf16", device="cuda")
    raw["dtypes"] = {"weights": "bfloat16", "activations": "bfloat16", "kv_cache": "bfloat16"}
    cfg = BuildConfig.from_dict(raw)
    ckpt = make_random_checkpoint(out / "ckpt", seed=1)
    roles = convert(ckpt, cfg, out / "roles", progress=False)
    engines, _ = build(roles, cfg, out / "engines", cache_dir=out / "cache", progress=False)
    return engines


def sub(*args: str, timeout: int = 600) -> dict:
    cmd = [sys.executable, "-X", "faulthandler", __file__, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail = (p.stdout + p.stderr).strip().splitlines()[-12:]
    out = p.stdout.strip().splitlines()
    r = {"args": list(args), "rc": p.returncode, "tail": tail, "last": out[-1] if out else ""}
    status = "ok" if r["rc"] == 0 else f"rc={r['rc']}"
    print(f"{status:>8}  {' '.join(Path(a).name if '/' in a else a for a in args)}", flush=True)
    if r["rc"] != 0:
        print("          " + "\n          ".join(tail), flush=True)
    return r


def main() -> None:
    if len(sys.argv) > 1:
        mode = sys.argv[1]
        if mode == "load":
            load_and_run(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
        elif mode == "trivial":
            probe_trivial(Path(sys.argv[2]))
        elif mode == "ops":
            print(json.dumps(probe_ops(Path(sys.argv[2]))))
        elif mode == "build":
            print(build_engines(Path(sys.argv[2])))
        elif mode == "rank":
            import plugins  # noqa: F401
            from step3_trt.runtime.engine import RankEngine
            e = RankEngine(sys.argv[2], "cuda")
            print("rank engine loaded", sorted(e.graphs))
        return
    print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())
    work = Path(tempfile.mkdtemp(prefix="aoti-probe-"))
    results = [sub("trivial", str(work)), sub("load", str(work / "trivial.pt2"))]
    r = sub("ops", str(work))
    results.append(r)
    if r["rc"] == 0:
        for name in json.loads(r["last"]):
            results.append(sub("load", str(work / f"op_{name}.pt2"), str(work / f"op_{name}.args")))
    r = sub("build", str(work))
    results.append(r)
    if r["rc"] == 0:
        engines = Path(r["last"])
        for pkg in sorted(engines.glob("*/rank0/graphs/*.pt2")):
            results.append(sub("load", str(pkg)))
        for rank in sorted(engines.glob("*/rank0")):
            results.append(sub("rank", str(rank)))

if __name__ == "__main__":
    main()
