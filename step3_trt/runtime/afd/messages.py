"""Control-plane messages of an AFD job (JSON objects; never pickle)."""

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


def request_message(request_id: int, prompt_ids: list[int], params: SamplingParams) -> dict:
    return {"type": "request", "id": request_id, "prompt_ids": prompt_ids,
            "params": params_to_dict(params)}


def result_message(req: Request) -> dict:
    return {"id": req.request_id, "output_ids": req.output, "finish_reason": req.finish_reason,
            "preemptions": req.preemptions}
