"""The `tensorrt_llm` model; its logic: step3_trt/serve/backend.py."""

from step3_trt.serve.backend import GenerationModel as TritonPythonModel  # noqa: F401
