"""Chat with `step3-trt serve --openai-port` through the official `openai` client: one streamed
reply (reasoning and content deltas as they arrive), then its usage.

    python scripts/openai_chat.py --url http://127.0.0.1:8003/v1 [--wait 600] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

from openai import OpenAI


def wait_healthy(base_url: str, wait_s: float) -> None:
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with opener.open(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"error: {health} did not answer 200 within {wait_s:.0f} s")
        time.sleep(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8003/v1")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for /health")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--message", default="Return a new list containing")
    args = p.parse_args()
    if args.wait:
        wait_healthy(args.url, args.wait)
    client = OpenAI(base_url=args.url, api_key="unused")
    stream = client.chat.completions.create(
        model="step3", messages=[{"role": "user", "content": args.message}],
        max_tokens=args.max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    part = None
    for chunk in stream:
        if chunk.usage is not None:
            print(f"\nusage: {chunk.usage.prompt_tokens} prompt + "
                  f"{chunk.usage.completion_tokens} completion tokens")
        for choice in chunk.choices:
            for name in ("reasoning_content", "content"):
                text = getattr(choice.delta, name, None)
                if text:
                    if part != name:
                        print(f"\n[{name}]", end="")
                        part = name
                    print(text, end="", flush=True)
            if choice.finish_reason:
                print(f"\n[finish_reason] {choice.finish_reason}", end="")


if __name__ == "__main__":
    main()
