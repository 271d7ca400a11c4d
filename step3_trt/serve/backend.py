"""The `step3` model of the Triton python backend (decoupled: any number of responses per
request). `triton_repo/step3/1/model.py` is this class; it runs inside Triton's stub process.

`execute` checks each request on Triton's thread (cheap and bounded) and hands it to the
admission lanes, which tokenize it and submit it to the AFD job (serve/admission.py). Error
codes: INVALID_ARG for the client's input, UNAVAILABLE while the job is restarting or gone,
INTERNAL for a failure of ours (docs/serving.md says what status each becomes).

Config parameters (filled in by `step3-trt serve`): `engines` (the engine directory, for the
tokenizer and the context length), `afd_endpoint` (the coordinator's ZeroMQ endpoint),
`startup_timeout_s` (how long loading waits for the job), `heartbeat_timeout_s`.
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from step3_trt.build_config import BuildConfig
from step3_trt.serve.admission import Admission
from step3_trt.serve.job_client import JobClient, JobUnavailable
from step3_trt.serve.metrics import JobMetrics
from step3_trt.serve.request import INPUTS, BadRequest, CheckedRequest, Limits, check_request, \
    tokenize
from step3_trt.serve.responses import ResponseStream
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer

REQUIRED = ("engines", "afd_endpoint")


def engine_limits(engine_dir: Path, tokenizer: Step3Tokenizer) -> Limits:
    build = BuildConfig.from_file(engine_dir / "build_config.yaml")
    meta = json.loads((engine_dir / "attention" / "rank0" / "engine.json").read_text())
    return Limits.of(tokenizer,
                     build.runtime.max_seq_len or meta["architecture"]["max_position_embedding"])


class Step3Model:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        missing = [k for k in REQUIRED if not params.get(k)]
        if missing:
            raise ValueError(f"model parameter(s) {', '.join(missing)} not set: start the server "
                             f"with `step3-trt serve --engines DIR`")
        engines = Path(params["engines"])
        self.tokenizer = load_tokenizer(engines)
        if self.tokenizer is None:
            raise FileNotFoundError(f"{engines} has no tokenizer (tokenizer/tokenizer.json)")
        self.limits = engine_limits(engines, self.tokenizer)
        self.metrics = JobMetrics(pb_utils)
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
                inputs = {}
                for name in INPUTS:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        inputs[name] = tensor.as_numpy()
                parameters = json.loads(request.parameters() or "{}")
                checked = check_request(inputs, parameters, self.limits)
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
            self.client.submit(parsed, ResponseStream(pb_utils, sender, parsed, self.tokenizer,
                                                      self.metrics.on_request_done))
        except BadRequest as e:
            self._error(sender, str(e), pb_utils.TritonError.INVALID_ARG)
        except JobUnavailable as e:
            self._error(sender, f"step3: {e}", pb_utils.TritonError.UNAVAILABLE)
        except Exception as e:  # noqa: BLE001 - answer the request whatever went wrong
            self._error(sender, f"internal error: {type(e).__name__}: {e}",
                        pb_utils.TritonError.INTERNAL)

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
