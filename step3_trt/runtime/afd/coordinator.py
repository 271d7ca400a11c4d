"""The coordinator (MPI rank 0): releases requests at their arrival times to the least-loaded
attention rank, watches that busy attention ranks keep making progress, and writes results in
request order as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import request_message
from step3_trt.runtime.afd.transport import AfdError, Transport
from step3_trt.sampling import SamplingParams, stop_string_hit
from step3_trt.tokenizer import Step3Tokenizer


@dataclass
class JobRequest:
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    arrival_s: float = 0.0


class Coordinator:
    def __init__(self, requests: list[JobRequest], layout: JobLayout, transport: Transport,
                 tokenizer: Step3Tokenizer | None, timeout_s: float, out=sys.stdout,
                 stats_file: Path | None = None):
        self.requests = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self.layout, self.transport, self.tokenizer = layout, transport, tokenizer
        self.timeout_s, self.out, self.stats_file = timeout_s, out, stats_file
        self.served_by: dict[int, int] = {}
        self.results: dict[int, dict] = {}
        self._next_to_print = 0
        self._order = [r.id for r in sorted(requests, key=lambda r: r.id)]
        self._prompts = {r.id: r.prompt_ids for r in requests}
        self._params = {r.id: r.params for r in requests}

    def wait_ready(self, startup_timeout_s: float) -> None:
        """Every worker reports once its engines are loaded; the clock starts after that."""
        waiting = set(self.layout.attention_ranks + self.layout.ffn_ranks)
        while waiting:
            msg, source = self.transport.recv_json(timeout_s=startup_timeout_s)
            if msg["type"] != "ready":
                raise AfdError(f"{self.layout.name(source)} sent {msg['type']!r} before 'ready'")
            waiting.discard(source)

    def run(self) -> None:
        start = time.monotonic()
        queue = list(self.requests)
        load = {a: 0 for a in self.layout.attention_ranks}
        last_heard = {a: time.monotonic() for a in load}
        while len(self.results) < len(self.requests):
            now = time.monotonic()
            while queue and queue[0].arrival_s <= now - start:
                req = queue.pop(0)
                target = min(load, key=lambda a: (load[a], a))
                if load[target] == 0:
                    last_heard[target] = now
                load[target] += 1
                self.served_by[req.id] = target
                self.transport.send_json(request_message(req.id, req.prompt_ids, req.params),
                                         target)
            got = self.transport.poll_json()
            if got is None:
                # Twice the per-message timeout: a worker waiting on a dead or hung peer reports
                # that peer itself first; this catches a hung attention rank.
                for rank, n in load.items():
                    if n and now - last_heard[rank] > 2 * self.timeout_s:
                        raise AfdError(f"{self.layout.name(rank)} made no progress for "
                                       f"{2 * self.timeout_s:g} s with {n} requests in flight")
                time.sleep(1e-3)
                continue
            msg, source = got
            last_heard[source] = time.monotonic()
            for result in msg.get("finished", []):
                self.results[result["id"]] = result
                load[source] -= 1
            self._flush()
        for rank in self.layout.attention_ranks:
            self.transport.send_json({"type": "shutdown"}, rank)
        if self.stats_file is not None:
            stats = {rid: {"served_by": self.layout.name(self.served_by[rid]),
                           **{k: v for k, v in r.items() if k not in ("id", "output_ids")}}
                     for rid, r in sorted(self.results.items())}
            self.stats_file.write_text(json.dumps({"requests": stats}, indent=1))

    def _text(self, rid: int, output_ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(output_ids)
        cut = stop_string_hit(text, self._params[rid])
        return text if cut is None else text[:cut]  # the stop string itself is not returned

    def _flush(self) -> None:
        """Print finished results in request order (a result waits for the ones before it)."""
        while self._next_to_print < len(self._order) and \
                self._order[self._next_to_print] in self.results:
            rid = self._order[self._next_to_print]
            r = self.results[rid]
            line = {"prompt_ids": self._prompts[rid]}
            if "error" in r:
                line["error"] = r["error"]
            else:
                line["output_ids"] = r["output_ids"]
                line["text"] = self._text(rid, r["output_ids"])
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()
            self._next_to_print += 1
