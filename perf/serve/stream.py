"""Stream one completion from `step3-trt serve` over gRPC, printing text as it arrives (a
TensorRT-LLM-backend style client: text_input, max_tokens, stream).

    python perf/serve/stream.py --url 127.0.0.1:8001 --prompt "Return a new list" [--wait 600]
"""

from __future__ import annotations

import argparse
import queue
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient


def wait_ready(client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.is_server_ready() and client.is_model_ready("step3"):
                return
        except grpcclient.InferenceServerException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"step3 not ready within {timeout_s:g} s")
        time.sleep(0.5)


def tensor(name: str, value, dtype: str, np_dtype):
    t = grpcclient.InferInput(name, [1, 1], dtype)
    t.set_data_from_numpy(np.array([[value]], dtype=np_dtype))
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC address")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for readiness first")
    args = p.parse_args(argv)
    client = grpcclient.InferenceServerClient(args.url)
    if args.wait:
        wait_ready(client, args.wait)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer("step3", [
        tensor("text_input", args.prompt.encode(), "BYTES", object),
        tensor("max_tokens", args.max_tokens, "INT32", np.int32),
        tensor("stream", True, "BOOL", bool)], enable_empty_final_response=True)
    sys.stdout.write(args.prompt)
    start, first, count = time.monotonic(), None, 0
    while True:
        result, error = responses.get(timeout=600)
        if error is not None:
            print(f"\nerror: {error}", file=sys.stderr)
            return 1
        text = result.as_numpy("text_output")
        if text is not None:
            first = first or time.monotonic()
            count += 1
            sys.stdout.write(text.reshape(-1)[0].decode())
            sys.stdout.flush()
        if result.get_response().parameters["triton_final_response"].bool_param:
            reason = result.as_numpy("finish_reason")
            break
    client.stop_stream()
    total = time.monotonic() - start
    print(f"\n[{count} responses, first after {(first or start) - start:.3f} s, "
          f"{total:.2f} s total, finish_reason "
          f"{reason.reshape(-1)[0].decode() if reason is not None else '?'}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
