"""The `step3` model: its logic lives in step3_trt.serve.backend (see triton_repo/README.md)."""

from step3_trt.serve.backend import Step3Model as TritonPythonModel  # noqa: F401
