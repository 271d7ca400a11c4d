"""`step3-trt run`: offline generation with an AFD job under the real `mpiexec`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from step3_trt.cli.generate_cmd import add_request_args, add_sampling_args, parse_ids, \
    request_options, sampling_params, word_ids


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate with an AFD job (attention + FFN ranks over MPI)",
                       description="Launch the engines' attention ranks and FFN ranks (plus a "
                                   "coordinator) with mpiexec and send them the prompts, as a "
                                   "client of the job like the Triton backend is. Each layer, "
                                   "attention ranks send each FFN rank the tokens routed to it "
                                   "(hidden states, FP8 for FP8 engines, and routing) and sum "
                                   "their partial outputs, several micro-batches in flight. "
                                   "Prints the same lines as `generate`, then the link summary.")
    p.add_argument("--engines", type=Path, required=True, help="engine directory from `build`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    src.add_argument("--prompt-ids", action="append", type=parse_ids,
                     help="prompt as comma-separated token ids (repeatable)")
    src.add_argument("--prompts-file", type=Path,
                     help="JSONL, one request per line: {\"prompt\": TEXT | \"prompt_ids\": [...], "
                          "\"max_tokens\", \"temperature\", \"top_k\", \"top_p\", \"seed\", "
                          "\"greedy\", \"stop\": [...], \"bad_words\": [...], \"min_tokens\", "
                          "\"arrival_s\"} (per-request sampling and arrival time)")
    add_sampling_args(p)
    add_request_args(p)
    p.add_argument("--transport", choices=["mpi", "torch"], default=None,
                   help="data plane between attention and FFN ranks: mpi (host buffers) or torch "
                        "(torch.distributed: gloo on CPU, NCCL on CUDA); default: the build "
                        "config's runtime.transport")
    p.add_argument("--micro-batches", type=int, default=None,
                   help="micro-batches per step (default: the build config's)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds any rank waits for a peer before failing the job (default: 60)")
    p.add_argument("--hostfile", type=Path, default=None,
                   help="mpiexec --hostfile: run the ranks on these hosts (default: this machine)")
    p.add_argument("--host", default=None, help="mpiexec --host, e.g. a:4,b:4")
    p.add_argument("--shared-network", action="store_true",
                   help="run a single-host job in the host's network namespace instead of one "
                        "of its own (mpiexec's out-of-band port then listens on every interface)")
    p.add_argument("--trace", type=Path, default=None,
                   help="write a Chrome-trace timeline of every rank to this file")
    p.add_argument("--device", default=None, help="device (default: the build config's)")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="never share KV blocks across requests with a common prefix (default: "
                        "the build config's kv_cache.prefix_caching, on unless it says false)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="keep pid files, logs and per-rank traces here (default: a temp dir)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per request: prompt_ids, output_ids, text (or error); "
                        "then a last line {\"summary\": {requests, errors, links}}: the bytes "
                        "each link carried, per token and in total, and the FFN ranks per token")
    p.set_defaults(run=run)


def read_requests(args, tokenizer):
    from step3_trt.runtime.afd.launch import JobRequest
    from step3_trt.sampling import SamplingParams

    default = sampling_params(args)
    bad_words, min_tokens = request_options(args, tokenizer)
    if not args.prompts_file:
        prompts = args.prompt_ids or [tokenizer.encode(t) for t in args.prompt]
        return [JobRequest(i, p, default, bad_words=bad_words, min_tokens=min_tokens)
                for i, p in enumerate(prompts)]
    requests = []
    for i, line in enumerate(args.prompts_file.read_text().splitlines()):
        if not line.strip():
            continue
        where = f"{args.prompts_file}:{i + 1}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON: {e}") from None
        if not isinstance(r, dict) or ("prompt" in r) == ("prompt_ids" in r):
            raise ValueError(f"{where}: give exactly one of prompt, prompt_ids")
        ids = r["prompt_ids"] if "prompt_ids" in r else tokenizer.encode(r["prompt"])
        try:
            params = SamplingParams(
                max_new_tokens=r.get("max_tokens", default.max_new_tokens),
                greedy=r.get("greedy", default.greedy),
                temperature=r.get("temperature", default.temperature),
                top_k=r.get("top_k", default.top_k), top_p=r.get("top_p", default.top_p),
                seed=r.get("seed", default.seed),
                stop_strings=tuple(r.get("stop", default.stop_strings)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        words = word_ids(tokenizer, r["bad_words"]) if "bad_words" in r \
            else bad_words
        requests.append(JobRequest(len(requests), ids, params, float(r.get("arrival_s", 0.0)),
                                   words, int(r.get("min_tokens", min_tokens))))
    if not requests:
        raise ValueError(f"{args.prompts_file} has no requests")
    return requests


def run(args) -> int:
    from step3_trt.runtime.afd.launch import Hosts, run_job
    from step3_trt.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.engines)
    if tokenizer is None and (args.prompt or args.prompts_file):
        raise FileNotFoundError(f"{args.engines}/tokenizer has no tokenizer.json; use --prompt-ids")
    requests = read_requests(args, tokenizer)
    prompts = iter(args.prompt or [])

    def show(result: dict) -> None:
        if args.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"[error] {result['error']}", flush=True)
        else:
            print(next(prompts, "") + result["text"], flush=True)

    def summary(s: dict) -> None:
        if args.json:
            print(json.dumps({"summary": s}), flush=True)
            return
        links = s["links"]
        print(f"[run] links per token: A->F {links['a2f_bytes_per_token']} B "
              f"(hidden states {links['wire_hidden']}), F->A {links['f2a_bytes_per_token']} B; "
              f"FFN ranks per token: MoE layers {links['moe_fanout']}, dense layers "
              f"{links['dense_fanout']}", file=sys.stderr, flush=True)

    return run_job(args.engines, requests, transport=args.transport, timeout=args.timeout,
                   micro_batches=args.micro_batches, device=args.device, trace_file=args.trace,
                   run_dir=args.run_dir, tokenizer=tokenizer,
                   hosts=Hosts(args.hostfile, args.host, args.shared_network),
                   on_result=show, on_summary=summary,
                   prefix_caching=not args.no_prefix_caching)
