"""One Triton request in flight: turns the AFD job's token deltas and result into responses.

Streaming (`stream` true): a response for each delta that adds final text (its `text_output`,
the `output_ids` since the previous response), then a final response with the rest, the
`finish_reason` and the token counts. Not streaming: one final response with everything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from step3_trt.serve.detok import TextStream
from step3_trt.serve.request import GenerationRequest
from step3_trt.tokenizer import Step3Tokenizer


class ResponseStream:
    def __init__(self, pb_utils, sender, request: GenerationRequest, tokenizer: Step3Tokenizer,
                 on_done: Callable[[str], None] | None = None):
        self.pb, self.sender, self.request = pb_utils, sender, request
        self.text = TextStream(tokenizer, request.params)
        self.pending_ids: list[int] = []
        self.output_ids: list[int] = []
        self.on_done = on_done
        self.lock = threading.Lock()
        self.closed = False

    def is_cancelled(self) -> bool:
        return self.sender.is_cancelled()

    def on_tokens(self, tokens: list[int]) -> None:
        self.output_ids += tokens
        self.pending_ids += tokens
        new_text = self.text.push(tokens)
        if self.request.stream and new_text:
            self._send(self._outputs(new_text, self.pending_ids), final=False)
            self.pending_ids = []

    def on_finished(self, result: dict) -> None:
        if "error" in result:
            self.fail(result["error"])
            return
        if result.get("finish_reason") == "cancelled":
            self.fail("request cancelled", cancelled=True)
            return
        rest = result["output_ids"][len(self.output_ids):]  # tokens not streamed yet
        self.output_ids += rest
        self.pending_ids += rest
        new_text = self.text.push(rest) + self.text.finish()
        if self.request.stream:
            ids = self.pending_ids
        else:
            new_text, ids = (self.request.prompt_text or "") + self.text.text, self.output_ids
        outputs = self._outputs(new_text, ids)
        outputs += [self._tensor("finish_reason", np.array([[result["finish_reason"]]], object)),
                    self._tensor("prompt_tokens", [[len(self.request.prompt_ids)]], np.int32),
                    self._tensor("completion_tokens", [[len(result["output_ids"])]], np.int32)]
        self._send(outputs, final=True, reason=result["finish_reason"])

    def fail(self, message: str, cancelled: bool = False) -> None:
        code = self.pb.TritonError.CANCELLED if cancelled else self.pb.TritonError.UNAVAILABLE
        self._send(None, final=True, error=self.pb.TritonError(message, code),
                   reason="cancelled" if cancelled else "error")

    def _tensor(self, name: str, value, dtype=None):
        return self.pb.Tensor(name, np.asarray(value, dtype=dtype))

    def _outputs(self, text: str, ids: list[int]) -> list:
        return [self._tensor("text_output", np.array([[text.encode()]], dtype=object)),
                self._tensor("output_ids", [ids], np.int32)]

    def _send(self, outputs, final: bool, error=None, reason: str = "") -> None:
        with self.lock:
            if self.closed:
                return
            flags = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
            response = self.pb.InferenceResponse(output_tensors=outputs or [], error=error)
            try:
                self.sender.send(response, flags=flags)
            finally:
                if final:
                    self.closed = True
                    if self.on_done is not None:
                        self.on_done(reason)
