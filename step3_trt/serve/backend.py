"""The generating models of the Triton python backend: `step3`, `tensorrt_llm` and
`tensorrt_llm_bls` are this class, each with its interface (serve/interfaces.py) named by the
config parameter `interface`; it runs inside Triton's stub process. Decoupled models send any
number of responses per request; non-decoupled ones (tensorrt_llm and tensorrt_llm_bls unless
`step3-trt serve --decoupled`) exactly one, through the same response sender.

`execute` checks each request on Triton's thread (cheap and bounded) and hands it to the
admission lanes, which tokenize it and submit it to the AFD job (serve/admission.py). Error
codes: INVALID_ARG for the client's input, UNAVAILABLE while the job is restarting or gone,
INTERNAL for a failure of ours (docs/serving.md says what status each becomes).

Config parameters: `interface`; `exclude_input_in_output`, `rank_metrics` (this model publishes
the per-rank metrics: serve/metrics.py) and (tensorrt_llm_bls) `accumulate_tokens`, "true" or
"false"; filled in by `step3-trt serve`: `engines` (the engine
directory, for the tokenizer and the context length), `afd_endpoint` (the coordinator's ZeroMQ
endpoint), `startup_timeout_s` (how long loading waits for the job), `heartbeat_timeout_s`.
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from step3_trt.serve.admission import Admission
from step3_trt.serve.interfaces import INTERFACES
from step3_trt.serve.job_client import JobClient, JobUnavailable
from step3_trt.serve.metrics import JobMetrics
from step3_trt.serve.model_config import engine_tokenizer, flag_parameter, model_interface, \
    request_inputs
from step3_trt.serve.outputs import BlsText, Step3Text, TokenIds
from step3_trt.serve.request import BadRequest, CheckedRequest, GenerationRequest, check, \
    tokenize
from step3_trt.serve.responses import ResponseStream

REQUIRED = ("engines", "afd_endpoint")


class GenerationModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params, self.interface = model_interface(config, REQUIRED, INTERFACES)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.include_input = not flag_parameter(params, "exclude_input_in_output", True)
        self.accumulate = flag_parameter(params, "accumulate_tokens", False)
        self.tokenizer, self.limits = engine_tokenizer(Path(params["engines"]))
        self.metrics = JobMetrics(pb_utils, config["name"],
                                  flag_parameter(params, "rank_metrics", False))
        self.client = JobClient(params["afd_endpoint"],
                                float(params.get("startup_timeout_s") or 600),
                                float(params.get("heartbeat_timeout_s") or 5),
                                on_heartbeat=self.metrics.on_heartbeat,
                                on_down=self.metrics.on_down, on_up=self.metrics.on_up)
        self.admission = Admission()
        self.metrics.on_up()  # from here on 0 means the job stopped answering

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                inputs = request_inputs(request, self.interface,
                                        pb_utils.get_input_tensor_by_name)
                parameters = json.loads(request.parameters() or "{}")
                checked = check(self.interface, inputs, parameters, self.limits,
                                self.include_input, self.decoupled)
                self.admission.submit(len(checked.text),
                                      lambda c=checked, s=sender: self._admit(c, s))
            except BadRequest as e:
                self._error(sender, str(e), pb_utils.TritonError.INVALID_ARG)
            except Exception as e:  # noqa: BLE001 - answer the request whatever went wrong
                self._error(sender, f"internal error: {type(e).__name__}: {e}",
                            pb_utils.TritonError.INTERNAL)
        return None

    def _admit(self, checked: CheckedRequest, sender) -> None:
        """On an admission lane: tokenize, then hand the request to the AFD job."""
        try:
            parsed = tokenize(checked, self.tokenizer, self.limits)
            self.client.submit(parsed, ResponseStream(pb_utils, sender, parsed,
                                                      self._outputs(parsed),
                                                      self.metrics.on_request_done))
        except BadRequest as e:
            self._error(sender, str(e), pb_utils.TritonError.INVALID_ARG)
        except JobUnavailable as e:
            self._error(sender, f"step3: {e}", pb_utils.TritonError.UNAVAILABLE)
        except Exception as e:  # noqa: BLE001 - answer the request whatever went wrong
            self._error(sender, f"internal error: {type(e).__name__}: {e}",
                        pb_utils.TritonError.INTERNAL)

    def _outputs(self, request: GenerationRequest):
        ends = self.limits.eos_token_ids | set(request.params.stop_token_ids)
        if self.interface.name == "tensorrt_llm":
            return TokenIds(request, ends)
        if self.interface.name == "tensorrt_llm_bls":
            return BlsText(self.tokenizer, request, ends, self.accumulate)
        return Step3Text(self.tokenizer, request)

    def _error(self, sender, message: str, code) -> None:
        self.metrics.on_request_done("rejected")
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self) -> None:
        admission = getattr(self, "admission", None)
        if admission is not None:
            admission.close()  # what was handed over is answered (by the job, or refused)
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
