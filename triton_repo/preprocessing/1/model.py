"""The `preprocessing` model; its logic: step3_trt/serve/tokenizer_models.py."""

from step3_trt.serve.tokenizer_models import TokenizerModel as TritonPythonModel  # noqa: F401
