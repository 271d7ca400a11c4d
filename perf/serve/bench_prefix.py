"""Prefix caching through `step3-trt serve` on a multi-turn chat workload: TTFT and the prefill
tokens the attention ranks computed, with caching on and with `--no-prefix-caching`, side by
side in one run (the two servers one after the other, on the same engines and workload).

The workload: `--conversations` chats share one system prompt; each has `--turns` user turns,
and each turn's prompt is the whole conversation so far (system prompt, earlier user turns and
the model's own replies) rendered with the engines' chat template (step3_trt/chat). Each chat is
a client that sends its next turn when the previous reply has arrived; chats start
`--stagger-s` apart. Replies are greedy with a fixed length (`min_length` = `max_tokens`), so
both servers see the same prompts; the script checks that every reply is identical.

TTFT is measured by the client (HTTP generate_stream: the request is sent -> the first
streamed event); prefill, cache-hit and looked-up tokens are the servers' own counters
(`step3_prefill_tokens_total`, `step3_prefix_cache_hit_tokens_total`, ...), read from
/metrics before and after. Writes one JSON naming the CPU.

    python perf/serve/bench_prefix.py --engines build/serve/engines \\
        --out perf/results/serve_prefix_<cpu>.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf.serve.bench import cpu_name  # noqa: E402
from step3_trt.chat.messages import Message  # noqa: E402
from step3_trt.chat.prompt import ChatFormat  # noqa: E402
from step3_trt.tokenizer import load_tokenizer  # noqa: E402
from tests.serve.clients import metrics, total  # noqa: E402
from tests.serve.server import Server  # noqa: E402 - the same supervised server the tests use

COUNTERS = {"prefill_tokens": "step3_prefill_tokens_total",
            "prefix_hit_tokens": "step3_prefix_cache_hit_tokens_total",
            "prefix_query_tokens": "step3_prefix_cache_query_tokens_total"}


def passages(text: str, n: int, chars: int, start: int) -> list[str]:
    """`n` passages of at most `chars` characters (cut at a space) from consecutive paragraphs
    of `text`, the first from paragraph `start`."""
    paras = [p.strip().replace("\n", " ") for p in text.split("\n\n") if p.strip()]
    out, i = [], start
    while len(out) < n:
        piece = ""
        while len(piece) < chars:
            piece += (" " if piece else "") + paras[i % len(paras)]
            i += 1
        out.append(piece[:chars].rsplit(" ", 1)[0])
    return out


def stream(base: str, body: dict) -> dict:
    """One generate_stream request: TTFT (to the first event), the reply, its token counts."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v2/models/step3/generate_stream", json.dumps(body))
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:500]!r}")
    ttft, text, ids, last = None, "", [], {}
    for line in response:
        if not line.startswith(b"data: "):
            continue
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(f"request failed: {event['error']}")
        ttft = ttft if ttft is not None else time.perf_counter() - start
        text += event.get("text_output", "")
        got = event.get("output_ids", [])
        ids += got if isinstance(got, list) else [got]
        last = event
    conn.close()
    return {"ttft_ms": 1e3 * ttft, "text": text, "output_ids": ids,
            "prompt_tokens": last["prompt_tokens"], "total_ms": 1e3 * (time.perf_counter() - start)}


def counters(server: Server) -> dict[str, float]:
    series = metrics(f"http://127.0.0.1:{server.metrics_port}")
    return {key: total(series, name) for key, name in COUNTERS.items()}


def settled_counters(server: Server) -> dict[str, float]:
    """The counters once the job is idle and a heartbeat has carried the last step's report."""
    server.wait_idle(settle_s=1.5)
    return counters(server)


def run_workload(server: Server, chat: ChatFormat, system: str, users: list[list[str]],
                 max_tokens: int, stagger_s: float) -> list[list[dict]]:
    """Every conversation in its own thread; returns the turns' results per conversation."""
    bos = chat.tokenizer.special_tokens["bos_token"]
    results: list[list[dict]] = [[] for _ in users]
    errors: list[BaseException] = []

    def converse(k: int) -> None:
        try:
            time.sleep(k * stagger_s)
            messages = [Message(role="system", content=system)]
            for user in users[k]:
                messages.append(Message(role="user", content=user))
                prompt = chat.render(messages)
                # the server adds BOS when it encodes text_input; the template writes it too
                prompt = prompt.removeprefix(bos)
                turn = stream(server.http, {"text_input": prompt, "max_tokens": max_tokens,
                                            "min_length": max_tokens, "stream": True})
                results[k].append(turn)
                messages.append(Message(role="assistant", content=turn["text"]))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=converse, args=(k,)) for k in range(len(users))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def summary(results: list[list[dict]], before: dict, after: dict) -> dict:
    turns = [t for conv in results for t in conv]
    ttfts = sorted(t["ttft_ms"] for t in turns)
    by_turn = [[conv[i]["ttft_ms"] for conv in results] for i in range(len(results[0]))]
    return {"requests": len(turns),
            "prompt_tokens": sum(t["prompt_tokens"] for t in turns),
            **{key: after[key] - before[key] for key in COUNTERS},
            "ttft_avg_ms": statistics.fmean(ttfts), "ttft_p50_ms": statistics.median(ttfts),
            "ttft_max_ms": ttfts[-1],
            "ttft_avg_ms_by_turn": [statistics.fmean(x) for x in by_turn],
            "prompt_tokens_by_turn": [statistics.fmean(conv[i]["prompt_tokens"]
                                                       for conv in results)
                                      for i in range(len(results[0]))]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "serve-bench-prefix")
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--system-chars", type=int, default=1200, help="system prompt length")
    p.add_argument("--user-chars", type=int, default=160, help="each user turn's length")
    p.add_argument("--max-tokens", type=int, default=24, help="tokens of each reply")
    p.add_argument("--stagger-s", type=float, default=0.5, help="between conversation starts")
    args = p.parse_args(argv)
    engines, work = args.engines.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    chat = ChatFormat(load_tokenizer(engines))
    text = (ROOT / "data" / "heldout.txt").read_text()
    system = passages(text, 1, args.system_chars, 0)[0]
    users = [passages(text, args.turns, args.user_chars, 50 + 40 * k)
             for k in range(args.conversations)]
    results = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
               "model": "step3-tiny (bundled), 2 attention + 2 FFN ranks, float32",
               "engines": str(args.engines), "date": time.strftime("%Y-%m-%d"),
               "workload": {"conversations": args.conversations, "turns": args.turns,
                            "system_prompt_tokens": len(chat.tokenizer.encode(system)),
                            "max_tokens": args.max_tokens, "stagger_s": args.stagger_s}}
    replies = {}
    for name, extra in (("prefix_caching", []), ("no_prefix_caching", ["--no-prefix-caching"])):
        server = Server(engines, work / name, extra=extra)
        try:
            server.start()
            before = settled_counters(server)
            load = os.getloadavg()[0]
            got = run_workload(server, chat, system, users, args.max_tokens, args.stagger_s)
            results[name] = summary(got, before, settled_counters(server))
            # the machine's 1-minute load average before and after (other users' work too)
            results[name]["load_avg"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        finally:
            if server.proc is not None:
                server.stop()
        replies[name] = [[t["output_ids"] for t in conv] for conv in got]
        print(name, json.dumps(results[name]), flush=True)
    results["identical_outputs"] = replies["prefix_caching"] == replies["no_prefix_caching"]
    on, off = results["prefix_caching"], results["no_prefix_caching"]
    results["prefill_tokens_ratio"] = on["prefill_tokens"] / off["prefill_tokens"]
    results["ttft_avg_speedup"] = off["ttft_avg_ms"] / on["ttft_avg_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}: identical outputs {results['identical_outputs']}, prefill tokens "
          f"{on['prefill_tokens']:.0f} vs {off['prefill_tokens']:.0f}, TTFT avg "
          f"{on['ttft_avg_ms']:.0f} vs {off['ttft_avg_ms']:.0f} ms")
    return 0 if results["identical_outputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
