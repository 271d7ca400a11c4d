"""The TensorRT-LLM ensemble's tokenizer steps, as python-backend models (not decoupled, one
response per request): `preprocessing` turns text into the token tensors `tensorrt_llm` takes,
`postprocessing` turns its token tensors into text. The ensemble wires them around
tensorrt_llm; clients may also call them directly, as TensorRT-LLM's end_to_end_test does.

preprocessing: QUERY -> INPUT_ID [1, n] and REQUEST_INPUT_LEN, encoded as step3 encodes prompts
(with BOS); BAD_WORDS_DICT / STOP_WORDS_DICT -> BAD_WORDS_IDS / STOP_WORDS_IDS in TensorRT-LLM's
word-list format (each word encoded without BOS); END_ID / PAD_ID -> OUT_END_ID / OUT_PAD_ID (the
tokenizer's end and pad tokens when not sent); REQUEST_OUTPUT_LEN passes through. Step-3 has no
decoder input: DECODER_INPUT_ID is empty ([1, 0], REQUEST_DECODER_INPUT_LEN 0), as is
EMBEDDING_BIAS; OUT_PROMPT_TABLE_EXTRA_IDS is never produced.
postprocessing: TOKENS_BATCH [1, beams, L] and SEQUENCE_LENGTH [1, beams] -> OUTPUT [beams], each
beam's first SEQUENCE_LENGTH tokens decoded (special tokens skipped unless the parameter
`skip_special_tokens` is "false"); the log-prob and logits inputs pass through to their OUT_
outputs, and absent ones become the zeros TensorRT-LLM's postprocessing sends.

Config parameters: `interface` (preprocessing / postprocessing), filled in by `step3-trt
serve`: `engines` (the engine directory: its tokenizer and context length).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import triton_python_backend_utils as pb_utils

from step3_trt.serve.interfaces import POSTPROCESSING, PREPROCESSING, read_fields
from step3_trt.serve.model_config import engine_tokenizer, flag_parameter, model_interface, \
    request_inputs
from step3_trt.serve.tensors import BadRequest
from step3_trt.serve.tokenizer_steps import postprocess, preprocess

TOKENIZER_INTERFACES = {i.name: i for i in (PREPROCESSING, POSTPROCESSING)}


class TokenizerModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params, self.interface = model_interface(config, ("engines",), TOKENIZER_INTERFACES)
        self.skip_special_tokens = flag_parameter(params, "skip_special_tokens", True)
        self.tokenizer, self.limits = engine_tokenizer(Path(params["engines"]))
        self.step = preprocess if self.interface is PREPROCESSING else \
            partial(postprocess, skip_special_tokens=self.skip_special_tokens)

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            inputs = request_inputs(request, self.interface, pb_utils.get_input_tensor_by_name)
            f = read_fields(self.interface, inputs, json.loads(request.parameters() or "{}"))
            outputs = self.step(f, self.tokenizer, self.limits)
            return pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])
        except BadRequest as e:
            error = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
        except Exception as e:  # noqa: BLE001 - answer the request whatever went wrong
            error = pb_utils.TritonError(f"internal error: {type(e).__name__}: {e}",
                                         pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse(error=error)
