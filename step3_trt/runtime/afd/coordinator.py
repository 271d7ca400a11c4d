"""The coordinator (MPI rank 0): releases requests at their arrival times to the least-loaded
attention rank, watches that busy attention ranks keep making progress, and writes results in
request order as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.dispatch import Dispatcher, wait_ready
from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import request_message
from step3_trt.runtime.afd.transport import Transport
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
        self.results: dict[int, dict] = {}
        self._next_to_print = 0
        self._order = [r.id for r in sorted(requests, key=lambda r: r.id)]
        self._prompts = {r.id: r.prompt_ids for r in requests}
        self._params = {r.id: r.params for r in requests}

    def wait_ready(self, startup_timeout_s: float) -> None:
        wait_ready(self.layout, self.transport, startup_timeout_s)

    def run(self) -> None:
        start = time.monotonic()
        queue = list(self.requests)
        dispatch = Dispatcher(self.layout, self.transport, self.timeout_s)
        while len(self.results) < len(self.requests):
            while queue and queue[0].arrival_s <= time.monotonic() - start:
                req = queue.pop(0)
                dispatch.submit(request_message(req.id, req.prompt_ids, req.params))
            got = dispatch.poll()
            if got is None:
                dispatch.check_progress()
                time.sleep(1e-3)
                continue
            for result in got[0].get("finished", []):
                self.results[result["id"]] = result
            self._flush()
        dispatch.shutdown()
        if self.stats_file is not None:
            stats = {rid: {"served_by": self.layout.name(dispatch.served_by[rid]),
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
