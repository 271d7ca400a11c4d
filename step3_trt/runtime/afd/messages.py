"""Control-plane messages of an AFD job (JSON objects; never pickle).

Coordinator -> attention rank: `request` (prompt ids, sampling parameters, whether to stream
token deltas, banned token sequences, minimum output length), `cancel`, `shutdown`.
Attention rank -> coordinator: `ready`, then one `step` report per step (or per batch of
control messages when idle): finished requests, token deltas of streaming requests, and the
rank's scheduler and KV-cache occupancy.
"""

from __future__ import annotations

import dataclasses

from step3_trt.runtime.scheduler import Request
from step3_trt.sampling import SamplingParams


def params_to_dict(params: SamplingParams) -> dict:
    d = dataclasses.asdict(params)
    d["stop_token_ids"] = list(params.stop_token_ids)
    d["stop_strings"] = list(params.stop_strings)
    return d


def params_from_dict(d: dict) -> SamplingParams:
    return SamplingParams(**{**d, "stop_token_ids": tuple(d.get("stop_token_ids", ())),
                             "stop_strings": tuple(d.get("stop_strings", ()))})


def request_message(request_id: int, prompt_ids: list[int], params: SamplingParams, *,
                    stream: bool = False, bad_words: list[list[int]] | None = None,
                    min_tokens: int = 0) -> dict:
    return {"type": "request", "id": request_id, "prompt_ids": prompt_ids,
            "params": params_to_dict(params), "stream": stream, "bad_words": bad_words or [],
            "min_tokens": min_tokens}


def cancel_message(request_id: int) -> dict:
    return {"type": "cancel", "id": request_id}


def result_message(req: Request) -> dict:
    return {"id": req.request_id, "output_ids": req.output, "finish_reason": req.finish_reason,
            "preemptions": req.preemptions}
