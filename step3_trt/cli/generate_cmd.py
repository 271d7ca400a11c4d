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
    add_request_args(p)
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


def add_request_args(p) -> None:
    p.add_argument("--stop", action="append", default=[],
                   help="stop string (repeatable): generation ends once the text contains it")
    p.add_argument("--bad-word", action="append", default=[], dest="bad_words",
                   help="text whose tokens are never generated in sequence (repeatable; the "
                        "TensorRT-LLM backend's bad_words)")
    p.add_argument("--min-tokens", type=int, default=0,
                   help="no end-of-sequence or stop token before this many output tokens (the "
                        "TensorRT-LLM backend's min_length; default: 0)")


def sampling_params(args):
    from step3_trt.sampling import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          seed=args.seed, stop_strings=tuple(args.stop))


def word_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """Each word's token ids as it would appear inside generated text (no BOS)."""
    if words and tokenizer is None:
        raise ValueError("bad words need the engines' tokenizer")
    return [ids for w in words if (ids := tokenizer.tokenizer.encode(w, add_special_tokens=False).ids)]


def request_options(args, tokenizer) -> tuple[list[list[int]], int]:
    """(bad word token sequences, min_tokens) from the command line, checked."""
    if args.min_tokens < 0:
        raise ValueError(f"--min-tokens must be >= 0, got {args.min_tokens}")
    return word_ids(tokenizer, args.bad_words), args.min_tokens


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
    from step3_trt.runtime.request import completion_text
    from step3_trt.tokenizer import load_tokenizer

    params = sampling_params(args)
    source = args.engines or args.checkpoint or DEFAULT_CHECKPOINT
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    tokenizer = load_tokenizer(source)
    if tokenizer is None and args.prompt:
        raise FileNotFoundError(f"{source} has no tokenizer.json; use --prompt-ids")
    prompts = args.prompt_ids or [tokenizer.encode(t) for t in args.prompt]
    outputs = _run_engines(args, prompts, params, tokenizer) if args.engines else \
        _run_reference(args, prompts, params)
    for text_in, prompt, out in zip(args.prompt or [None] * len(prompts), prompts, outputs):
        text = completion_text(tokenizer.decode, out, params) if tokenizer else ""
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

    if args.bad_words or args.min_tokens or args.stop:
        raise ValueError("--stop, --bad-word and --min-tokens apply to --engines (the reference "
                         "model's generate knows greedy/sampling and end-of-sequence only)")
    reader = CheckpointReader(args.checkpoint or DEFAULT_CHECKPOINT)
    model = load_reference_model(reader, dtype=args.dtype)
    stops = GenerationConfig.from_dir(reader.root, reader.config)  # every EOS id, and <|EOT|>
    return generate(model, prompts, stops.with_stops(params))


def _run_engines(args, prompts, params, tokenizer):
    from step3_trt.runtime.local import LocalRunner
    from step3_trt.runtime.request import Request

    if args.dtype != "auto":
        raise ValueError("--dtype applies to --checkpoint; engines run in their built dtypes")
    bad_words, min_tokens = request_options(args, tokenizer)
    runner = LocalRunner(args.engines, device=args.device)
    requests = [Request(i, p, params, bad_words=bad_words, min_tokens=min_tokens)
                for i, p in enumerate(prompts)]
    done = runner.run(requests)
    failed = [f"prompt {r.request_id}: {r.error}" for r in done if r.error is not None]
    if failed:
        raise RuntimeError("; ".join(failed))
    return [r.output for r in done]
