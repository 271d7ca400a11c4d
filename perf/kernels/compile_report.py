"""Compile every Triton kernel of `plugins` for sm_90 WITHOUT a GPU and report its resources.

For each kernel variant: shared memory, registers and spills (ptxas -v on the generated PTX),
and a count of wgmma / mma.sync / cp.async / ld.global instructions. Integer arguments that the
JIT would specialize (strides, sizes divisible by 16) and all pointers are marked 16-divisible,
as they are at run time for the shapes we use. Needs only `triton` (its bundled ptxas).

    python perf/kernels/compile_report.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from plugins.triton_kernels import fp8, kv_append, mfa, moe  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DIV16 = {"K", "N", "HD", "I", "M", "tokens_per_split"}
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTXAS, CUOBJDUMP = os.path.join(BIN, "ptxas"), os.path.join(BIN, "cuobjdump")
# SASS instructions counted per kernel: tensor-core products (QGMMA: FP8 wgmma, HGMMA: 16-bit
# wgmma, HMMA: mma.sync), global->shared async copies (LDGSTS), byte permutes (PRMT: register
# transposes / FP8 packing), shared stores (STS) and global loads (LDG)
SASS_OPS = ("QGMMA", "HGMMA", "HMMA", "LDGSTS", "PRMT", "STS", "LDG")


def report(kernel, types, consts, num_warps, num_stages, label):
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in kernel.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
             if n not in consts and (sig[n].startswith("*") or n.startswith("stride") or n in DIV16)}
    try:
        k = triton.compile(ASTSource(kernel, sig, constexprs=consts, attrs=attrs), target=TARGET,
                           options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as exc:  # noqa: BLE001
        print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:400]}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(k.asm["ptx"])
        res = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx, "-o", cubin],
                             capture_output=True, text=True).stderr
        sass = subprocess.run([CUOBJDUMP, "--dump-sass", cubin], capture_output=True, text=True).stdout
    regs = re.search(r"Used (\d+) registers", res)
    spill = re.search(r"(\d+) bytes spill stores", res)
    counts = {op: len(re.findall(rf"\b{op}\b", sass)) for op in SASS_OPS}
    ops = " ".join(f"{op}={n}" for op, n in counts.items())
    print(f"{label:48s} smem={k.metadata.shared // 1024:4d}KB regs={regs.group(1) if regs else '?':>3s} "
          f"spill={spill.group(1) if spill else '?':>4s}B {ops}")


def main():
    bf, f8 = "*bf16", "*fp8e4nv"
    for is_fp8 in (False, True):
        for cfg in mfa.CONFIGS[is_fp8]:
            bn, w, s, _ = cfg
            kv = f8 if is_fp8 else bf
            t = {"q_ptr": bf, "k_ptr": kv, "v_ptr": kv, "bt_ptr": "*i32", "seq_ptr": "*i32", "len_ptr": "*i32",
                 "ks_ptr": "*fp32", "vs_ptr": "*fp32", "o_ptr": bf, "lse_ptr": "*fp32", "qk_scale": "fp32"}
            for bs in (64, 16) if is_fp8 else (16,):
                report(mfa._attn_split_kernel, t, dict(BS=bs, D=256, BLOCK_H=64, BLOCK_N=bn, DECODE=True,
                                                       K_SCALE=int(is_fp8), V_SCALE=int(is_fp8),
                                                       ONE_SPLIT=False, FP8=is_fp8),
                       w, s, f"attn {'fp8' if is_fp8 else 'bf16'} BS={bs} cfg={cfg}")
    report(mfa._merge_kernel, {"po_ptr": bf, "lse_ptr": "*fp32", "o_ptr": bf}, dict(BLOCK_D=64, BLOCK_S=64),
           4, 3, "merge")
    report(kv_append._kv_append_kernel, {"k_ptr": bf, "v_ptr": bf, "kc_ptr": f8, "vc_ptr": f8, "slot_ptr": "*i64",
                                   "ks_ptr": "*fp32", "vs_ptr": "*fp32"},
           dict(BS=16, D=256, SCALE=2, QUANT=True), 4, 3, "kv_append fp8")
    report(fp8._quant_kernel, {"x_ptr": bf, "q_ptr": f8, "s_ptr": "*fp32"}, dict(BLOCK=128, STATIC=False),
           4, 3, "fp8 quantize group")
    for BM in (64, 128):
        for wb in (True, False):
            report(fp8._fp8_gemm_kernel, {"x_ptr": f8, "xs_ptr": "*fp32", "w_ptr": f8, "ws_ptr": "*fp32",
                                          "y_ptr": bf}, dict(W_BLOCK=wb, BM=BM, BN=BM, BK=128, GROUP_M=8),
                   8 if BM == 128 else 4, 4, f"fp8_linear BM=BN={BM} block={wb}")
    for is_fp8 in (True, False):
        dt = f8 if is_fp8 else bf
        BK = 128 if is_fp8 else 64
        for BM, warps, stages in moe.CONFIGS:
            c = dict(FP8_W=is_fp8, W_BLOCK=is_fp8, IMPRECISE=None, BM=BM, BK=BK)
            name = f"{'fp8' if is_fp8 else 'bf16'} BM={BM} w={warps} s={stages}"
            report(moe._moe_up_kernel, {"x_ptr": dt, "xs_ptr": "*fp32", "wg_ptr": dt, "wu_ptr": dt,
                                        "sg_ptr": "*fp32", "su_ptr": "*fp32", "h_ptr": dt, "hs_ptr": "*fp32",
                                        "sorted_ptr": "*i32", "bexp_ptr": "*i32"},
                   dict(c, BN=128 if is_fp8 or BM < 128 else 64, H_DTYPE=tl.bfloat16), warps, stages,
                   f"moe_up {name}")
            report(moe._moe_down_kernel, {"h_ptr": dt, "hs_ptr": "*fp32", "wd_ptr": dt, "sd_ptr": "*fp32",
                                          "tw_ptr": "*bf16", "y_ptr": "*fp32", "sorted_ptr": "*i32",
                                          "bexp_ptr": "*i32"}, dict(c, BN=128), warps, stages,
                   f"moe_down {name}")
    report(moe._moe_sum_kernel, {"y_ptr": "*fp32", "row_ptr": "*i32", "out_ptr": bf},
           dict(TOPK=3, BLOCK=1024), 4, 1, "moe_sum")


if __name__ == "__main__":
    main()
