"""`step3-trt quantize --checkpoint DIR --out DIR [--calib-data FILE] ...`: FP8 calibration."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CALIB = Path(__file__).resolve().parents[2] / "data" / "calib.txt"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quantize", help="calibrate with NVIDIA ModelOpt and write an FP8 checkpoint",
        description="FP8 (e4m3) post-training quantization. Loads the reference model one "
                    "decoder layer at a time, inserts ModelOpt FP8 quantizers, calibrates them on "
                    "real text (max of each input), and writes an FP8 checkpoint in the HF layout: "
                    "FP8 weights with weight scales, static activation scales, optional FP8 "
                    "KV-cache scales, described in `quantization_config` of config.json. The "
                    "embedding, router, norms and lm_head stay in the checkpoint's dtype. An "
                    "already block-FP8 checkpoint (128x128 blocks, weight_scale_inv) needs no "
                    "quantize step: pass it to `convert` directly.")
    p.add_argument("--checkpoint", required=True, help="BF16/FP16/FP32 Step-3 checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (appears only when complete)")
    p.add_argument("--calib-data", type=Path, default=DEFAULT_CALIB,
                   help="calibration text: plain text, or .jsonl with a \"text\" field per line "
                        "(default: the project's data/calib.txt)")
    p.add_argument("--calib-size", type=int, default=32,
                   help="calibration sequences (default 32); too little text is an error")
    p.add_argument("--calib-seq-len", type=int, default=256, help="tokens per sequence (256)")
    p.add_argument("--weights", choices=("per-tensor", "per-channel", "block128"),
                   default="per-tensor", help="weight-scale granularity (default per-tensor); "
                   "block128 = 128x128 blocks with dynamic per-group activation scales, the "
                   "DeepSeek / released Step-3 FP8 layout")
    p.add_argument("--kv-cache", choices=("fp8", "auto"), default="auto",
                   help="fp8: also calibrate K/V scales for an 8-bit KV cache")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from step3_trt.quant.quantize import QuantizeOptions, quantize_checkpoint
    from step3_trt.quant.scheme import Fp8Scheme

    scheme = Fp8Scheme(args.weights, "dynamic" if args.weights == "block128" else "static",
                       args.kv_cache == "fp8")
    opts = QuantizeOptions(args.calib_data, args.calib_size, args.calib_seq_len, scheme=scheme)
    out = quantize_checkpoint(args.checkpoint, args.out, opts, overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(f"wrote FP8 checkpoint ({args.weights} weights, "
          f"{'FP8' if scheme.kv_cache_fp8 else 'unquantized'} KV cache) to {out}")
    return 0
