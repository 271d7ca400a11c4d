"""`step3-trt generate`: text generation with the reference model (engines: see the README)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from step3_trt.config import CHECKPOINT_DTYPES
from step3_trt.presets import DEFAULT_CHECKPOINT


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint or engines",
                       description="Generate text with the reference model of a checkpoint, or "
                                   "with compiled engines (attention and FFN engines run layer by "
                                   "layer in this process, paged KV cache, continuous batching). "
                                   "Several --prompt / --prompt-ids flags form one batch.")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, default=None,
                       help=f"run the reference model of a checkpoint (default: the bundled "
                            f"model, {DEFAULT_CHECKPOINT})")
    model.add_argument("--engines", type=Path, default=None,
                       help="run compiled engines from `step3-trt build` in this process")
    p.add_argument("--device", default=None,
                   help="with --engines: device to run on (default: the build config's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    src.add_argument("--prompt-ids", action="append", type=parse_ids,
                     help="prompt as comma-separated token ids, e.g. 1,2,3 (repeatable)")
    add_sampling_args(p)
    p.add_argument("--dtype", default="auto", choices=["auto", *CHECKPOINT_DTYPES],
                   help="compute dtype (default: the checkpoint's)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per prompt: prompt_ids, output_ids, text")
    p.set_defaults(run=run)


def add_sampling_args(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default: 32)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores the flags below)")
    p.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass to keep (default: 1.0)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")


def sampling_params(args):
    from step3_trt.sampling import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          seed=args.seed)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("is empty")
    return ids


def run(args) -> int:
    from step3_trt.tokenizer import load_tokenizer

    params = sampling_params(args)
    source = args.engines or args.checkpoint or DEFAULT_CHECKPOINT
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    tokenizer = load_tokenizer(source)
    if tokenizer is None and args.prompt:
        raise FileNotFoundError(f"{source} has no tokenizer.json; use --prompt-ids")
    prompts = args.prompt_ids or [tokenizer.encode(t) for t in args.prompt]
    outputs = _run_engines(args, prompts, params) if args.engines else \
        _run_reference(args, prompts, params)
    for text_in, prompt, out in zip(args.prompt or [None] * len(prompts), prompts, outputs):
        text = tokenizer.decode(out) if tokenizer else ""
        if args.json:
            print(json.dumps({"prompt_ids": prompt, "output_ids": out, "text": text}))
        else:
            print((text_in or "") + text)
    return 0


def _run_reference(args, prompts, params):
    from step3_trt.checkpoint.reader import CheckpointReader
    from step3_trt.generation_config import GenerationConfig
    from step3_trt.model.generate import generate
    from step3_trt.model.load import load_reference_model

    reader = CheckpointReader(args.checkpoint or DEFAULT_CHECKPOINT)
    model = load_reference_model(reader, dtype=args.dtype)
    stops = GenerationConfig.from_dir(reader.root, reader.config)  # every EOS id, and <|EOT|>
    return generate(model, prompts, stops.with_stops(params))


def _run_engines(args, prompts, params):
    from step3_trt.generation_config import GenerationConfig
    from step3_trt.runtime.local import LocalRunner

    if args.dtype != "auto":
        raise ValueError("--dtype applies to --checkpoint; engines run in their built dtypes")
    runner = LocalRunner(args.engines, device=args.device)
    stops = GenerationConfig.from_dir(args.engines, runner.config)  # every EOS id, and <|EOT|>
    return runner.generate(prompts, stops.with_stops(params))
