"""One Triton request in flight: turns the AFD job's token deltas and result into responses.

Streaming (`stream` true): a response for each delta that adds output, then a final response
with the rest. Not streaming: one final response with everything. What the responses hold is
the model's output format (serve/outputs.py): step3's text, tensorrt_llm's token ids, or
tensorrt_llm_bls's text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from step3_trt.serve.request import GenerationRequest

Outputs = dict[str, np.ndarray]  # output tensor name -> value


class OutputFormat(Protocol):
    def delta(self, tokens: list[int]) -> Outputs | None:
        """Outputs for streamed tokens, or None while they add nothing to send."""

    def final(self, result: dict) -> Outputs:
        """Outputs of the final response (`result`: output_ids, finish_reason)."""


class ResponseStream:
    def __init__(self, pb_utils, sender, request: GenerationRequest, outputs: OutputFormat,
                 on_done: Callable[[str], None] | None = None):
        self.pb, self.sender, self.request, self.outputs = pb_utils, sender, request, outputs
        self.on_done = on_done
        self.lock = threading.Lock()
        self.closed = False

    def is_cancelled(self) -> bool:
        return self.sender.is_cancelled()

    def on_tokens(self, tokens: list[int]) -> None:
        if self.request.stream and (outputs := self.outputs.delta(tokens)) is not None:
            self._send(outputs, final=False)

    def on_finished(self, result: dict) -> None:
        if "error" in result:
            self.fail(result["error"])
        elif result.get("finish_reason") == "cancelled":
            self.fail("request cancelled", cancelled=True)
        else:
            self._send(self.outputs.final(result), final=True, reason=result["finish_reason"])

    def fail(self, message: str, cancelled: bool = False) -> None:
        code = self.pb.TritonError.CANCELLED if cancelled else self.pb.TritonError.UNAVAILABLE
        self._send(None, final=True, error=self.pb.TritonError(message, code),
                   reason="cancelled" if cancelled else "error")

    def _send(self, outputs: Outputs | None, final: bool, error=None, reason: str = "") -> None:
        with self.lock:
            if self.closed:
                return
            flags = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
            tensors = [self.pb.Tensor(name, value) for name, value in (outputs or {}).items()]
            response = self.pb.InferenceResponse(output_tensors=tensors, error=error)
            try:
                self.sender.send(response, flags=flags)
            finally:
                if final:
                    self.closed = True
                    if self.on_done is not None:
                        self.on_done(reason)
