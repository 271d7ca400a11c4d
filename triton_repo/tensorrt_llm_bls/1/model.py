"""The `tensorrt_llm_bls` model; its logic: step3_trt/serve/backend.py."""

from step3_trt.serve.backend import GenerationModel as TritonPythonModel  # noqa: F401
