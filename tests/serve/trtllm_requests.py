"""The requests of the TensorRT-LLM backend's r24.10 client scripts, built with tritonclient the
way each script builds them (model names, tensor names, dtypes, shapes, request ids, the RPC):
- inflight_batcher_llm/client/end_to_end_grpc_client.py: `ensemble` or `tensorrt_llm_bls` over
  the gRPC stream, streaming or not, always with beam_width and temperature;
- inflight_batcher_llm/client/inflight_batcher_llm_client.py: `tensorrt_llm` with token ids,
  ModelInfer (with the parameter Streaming) or the gRPC stream;
- tools/inflight_batcher_llm/end_to_end_test.py: preprocessing -> tensorrt_llm ->
  postprocessing by hand, then `ensemble` and `tensorrt_llm_bls`, over HTTP infer.
"""

from __future__ import annotations

import queue

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype


def tensor(client_module, name: str, value: np.ndarray):
    t = client_module.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    t.set_data_from_numpy(value)
    return t


def e2e_grpc_inputs(prompt: str, output_len: int, streaming: bool, **optional) -> list:
    """end_to_end_grpc_client.py's prepare_inputs (defaults: beam width 1, temperature 1.0);
    `optional`: repetition_penalty / presence_penalty / frequency_penalty (fp32), end_id /
    pad_id (int32), stop_words / bad_words (lists of strings), as its flags add them."""
    values = {"text_input": np.array([[prompt]]).astype(object),
              "max_tokens": np.ones_like([[prompt]]).astype(np.int32) * output_len,
              "stream": np.array([[streaming]], dtype=bool),
              "beam_width": np.array([[1]], dtype=np.int32),
              "temperature": np.array([[1.0]], dtype=np.float32)}
    for name, value in optional.items():
        if name in ("stop_words", "bad_words"):
            values[name] = np.array([value], dtype=object)
        elif name in ("end_id", "pad_id"):
            values[name] = np.array([[value]], dtype=np.int32)
        else:
            values[name] = np.array([[value]], dtype=np.float32)
    return [tensor(grpcclient, k, v) for k, v in values.items()]


def stream_results(url: str, model: str, inputs: list, cancel_after: int | None = None) -> list:
    """One request over the gRPC stream, as both gRPC scripts send it (request id ''): every
    result or InferenceServerException, in order. `cancel_after`: close the stream with
    cancellation after that many results (inflight_batcher_llm_client's
    --stop-via-request-cancel)."""
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    client.async_stream_infer(model, inputs, request_id="")
    out = []
    if cancel_after is None:
        client.stop_stream()  # waits for the server to close the stream
    else:
        while len(out) < cancel_after:
            out.append(results.get(timeout=300))
        client.stop_stream(cancel_requests=True)
    while not results.empty():
        out.append(results.get())
    client.close()
    return out


def inflight_inputs(input_ids: list[int], output_len: int, streaming: bool, end_id: int,
                    pad_id: int, **optional) -> list:
    """inflight_batcher_llm_client.py's prepare_inputs with its defaults (beam width 1,
    temperature 1.0, top_k 1, top_p 0, return_log_probs false); `optional`: the penalties and
    exclude_input_in_output, as its flags add them."""
    values = {"input_ids": np.array([input_ids], dtype=np.int32),
              "input_lengths": np.array([[len(input_ids)]], dtype=np.int32),
              "request_output_len": np.array([[output_len]], dtype=np.int32),
              "beam_width": np.array([[1]], dtype=np.int32),
              "temperature": np.array([[1.0]], dtype=np.float32),
              "streaming": np.array([[streaming]], dtype=bool),
              "end_id": np.array([[end_id]], dtype=np.int32),
              "pad_id": np.array([[pad_id]], dtype=np.int32),
              "return_log_probs": np.array([[False]], dtype=bool),
              "runtime_top_k": np.array([[1]], dtype=np.int32),
              "runtime_top_p": np.array([[0.0]], dtype=np.float32)}
    for name, value in optional.items():
        dtype = bool if name == "exclude_input_in_output" else np.float32
        values[name] = np.array([[value]], dtype=dtype)
    return [tensor(grpcclient, k, v) for k, v in values.items()]


def inflight_infer(url: str, inputs: list, streaming: bool = False):
    """The non-streaming path: ModelInfer (async_infer) with the parameter Streaming (the
    script's --streaming flag, false on this path)."""
    results: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url) as client:
        client.async_infer("tensorrt_llm", inputs, request_id="",
                           callback=lambda result, error: results.put(error or result),
                           parameters={"Streaming": streaming})
        return results.get(timeout=300)


class EndToEndTest:
    """end_to_end_test.py's test_functionality for one prompt, over HTTP: every result it
    reads, by step."""

    def __init__(self, url: str):
        self.client = httpclient.InferenceServerClient(url, concurrency=128)

    def infer(self, model: str, values: dict[str, np.ndarray], request_id: str = "0"):
        inputs = [tensor(httpclient, k, v) for k, v in values.items()]
        return self.client.infer(model, inputs, request_id=request_id)

    def run(self, prompt: str, output_len: int) -> dict:
        query = np.array([[prompt]]).astype(object)
        length = np.ones_like([[prompt]]).astype(np.int32) * output_len
        empty = np.array([[""]], dtype=object)
        pre = self.infer("preprocessing", {"QUERY": query, "BAD_WORDS_DICT": empty,
                                           "STOP_WORDS_DICT": empty, "REQUEST_OUTPUT_LEN": length})
        llm = self.infer("tensorrt_llm", {
            "input_ids": pre.as_numpy("INPUT_ID"),
            "decoder_input_ids": pre.as_numpy("DECODER_INPUT_ID"),
            "input_lengths": pre.as_numpy("REQUEST_INPUT_LEN"),
            "request_output_len": pre.as_numpy("REQUEST_OUTPUT_LEN"),
            "end_id": pre.as_numpy("OUT_END_ID"), "pad_id": pre.as_numpy("OUT_PAD_ID")})
        post = self.infer("postprocessing", {
            "TOKENS_BATCH": llm.as_numpy("output_ids").astype(np.int32),
            "SEQUENCE_LENGTH": llm.as_numpy("sequence_length"),
            "CUM_LOG_PROBS": llm.as_numpy("cum_log_probs").astype(np.float32),
            "OUTPUT_LOG_PROBS": llm.as_numpy("output_log_probs").astype(np.float32),
            "CONTEXT_LOGITS": llm.as_numpy("context_logits").astype(np.float32),
            "GENERATION_LOGITS": llm.as_numpy("generation_logits").astype(np.float32)})
        text = {"text_input": query, "max_tokens": length, "bad_words": empty,
                "stop_words": empty}
        return {"preprocessing": pre, "tensorrt_llm": llm, "postprocessing": post,
                "ensemble": self.infer("ensemble", text),
                "tensorrt_llm_bls": self.infer("tensorrt_llm_bls", text)}

    def close(self) -> None:
        self.client.close()


def error_text(result) -> str | None:
    return str(result) if isinstance(result, InferenceServerException) else None
