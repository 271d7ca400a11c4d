"""The `afd_job` model: its logic lives in step3_trt.serve.afd_job (see triton_repo/README.md)."""

from step3_trt.serve.afd_job import AfdJobModel as TritonPythonModel  # noqa: F401
