"""What the responses of each generating model hold (serve/responses.py sends them).

- `Step3Text` (step3): `text_output` (the text that became final: serve/detok.py),
  `output_ids` (the tokens since the previous response); the final response adds
  `finish_reason`, `prompt_tokens` and `completion_tokens`.
- `TokenIds` (tensorrt_llm): `output_ids` [1, 1, n] and `sequence_length` [1, 1]; streamed: the
  new tokens; not streamed: the prompt's tokens first unless `exclude_input_in_output`.
- `BlsText` (tensorrt_llm_bls): `text_output` [1]; streamed: the new text (all of it so far with
  `accumulate_tokens`); not streamed: the decoded tokens, the prompt's first unless excluded.
The TensorRT-LLM models end their tokens before the end token that stopped the sequence (as
TensorRT-LLM's sequence lengths do; stop words stay) and always return `cum_log_probs`,
`output_log_probs`, `context_logits`, `generation_logits` and `batch_index` with the zeros
TensorRT-LLM's backend sends when they are not requested (serve/interfaces.py refuses requests
for them).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from step3_trt.serve.detok import TextStream
from step3_trt.serve.request import GenerationRequest
from step3_trt.tokenizer import Step3Tokenizer

Outputs = dict[str, np.ndarray]


class Step3Text:
    def __init__(self, tokenizer: Step3Tokenizer, request: GenerationRequest):
        self.request = request
        self.text = TextStream(tokenizer, request.params)
        self.pending: list[int] = []  # streamed tokens whose text is not final yet
        self.streamed = 0

    def delta(self, tokens: list[int]) -> Outputs | None:
        self.streamed += len(tokens)
        self.pending += tokens
        new_text = self.text.push(tokens)
        if not new_text:
            return None
        outputs, self.pending = self._outputs(new_text, self.pending), []
        return outputs

    def final(self, result: dict) -> Outputs:
        ids = result["output_ids"]
        rest = ids[self.streamed:]
        new_text = self.text.push(rest) + self.text.finish()
        if self.request.stream:
            outputs = self._outputs(new_text, self.pending + rest)
        else:
            echo = self.request.prompt_text if self.request.include_input else ""
            outputs = self._outputs(echo + self.text.text, ids)
        return {**outputs,
                "finish_reason": np.array([[result["finish_reason"]]], dtype=object),
                "prompt_tokens": np.array([[len(self.request.prompt_ids)]], dtype=np.int32),
                "completion_tokens": np.array([[len(ids)]], dtype=np.int32)}

    @staticmethod
    def _outputs(text: str, ids: list[int]) -> Outputs:
        return {"text_output": np.array([[text.encode()]], dtype=object),
                "output_ids": np.array([ids], dtype=np.int32)}


def generated(result: dict, ends: Collection[int]) -> list[int]:
    """The output tokens without the end token that stopped the sequence, if one did."""
    ids = list(result["output_ids"])
    if result.get("finish_reason") == "stop" and ids and ids[-1] in ends:
        ids.pop()
    return ids


def not_requested(prompt_tokens: int) -> Outputs:
    """The outputs TensorRT-LLM's backend fills with zeros when they were not asked for (its
    output_log_probs has the prompt's length)."""
    return {"cum_log_probs": np.zeros((1, 1), np.float32),
            "output_log_probs": np.zeros((1, 1, prompt_tokens), np.float32),
            "context_logits": np.zeros((1, 1, 1), np.float32),
            "generation_logits": np.zeros((1, 1, 1, 1), np.float32),
            "batch_index": np.zeros((1, 1), np.int32)}


class TokenIds:
    def __init__(self, request: GenerationRequest, ends: Collection[int]):
        self.request, self.ends = request, ends
        self.streamed = 0

    def delta(self, tokens: list[int]) -> Outputs:
        self.streamed += len(tokens)
        return self._outputs(tokens)

    def final(self, result: dict) -> Outputs:
        ids = generated(result, self.ends)
        if self.request.stream:
            ids = ids[self.streamed:]
        elif self.request.include_input:
            ids = self.request.prompt_ids + ids
        return self._outputs(ids)

    def _outputs(self, ids: list[int]) -> Outputs:
        return {"output_ids": np.array([[ids]], dtype=np.int32).reshape(1, 1, len(ids)),
                "sequence_length": np.array([[len(ids)]], dtype=np.int32),
                **not_requested(len(self.request.prompt_ids))}


class BlsText:
    def __init__(self, tokenizer: Step3Tokenizer, request: GenerationRequest,
                 ends: Collection[int], accumulate: bool):
        self.tokenizer, self.request, self.ends = tokenizer, request, ends
        self.accumulate = accumulate
        self.text = TextStream(tokenizer, request.params)
        self.streamed = 0

    def delta(self, tokens: list[int]) -> Outputs | None:
        self.streamed += len(tokens)
        new_text = self.text.push(tokens)
        return self._outputs(self.text.text if self.accumulate else new_text) if new_text \
            else None

    def final(self, result: dict) -> Outputs:
        ids = generated(result, self.ends)
        if self.request.stream:
            new_text = self.text.push(ids[self.streamed:]) + self.text.finish()
            return self._outputs(self.text.text if self.accumulate else new_text)
        if self.request.include_input:
            ids = self.request.prompt_ids + ids
        return self._outputs(self.tokenizer.decode(ids))

    def _outputs(self, text: str) -> Outputs:
        return {"text_output": np.array([text.encode()], dtype=object),
                **not_requested(len(self.request.prompt_ids))}
