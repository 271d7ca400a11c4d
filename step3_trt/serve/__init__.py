"""Serving: the Triton python backend's logic (request parsing, streaming text, the client of
the AFD job) and `step3-trt serve` (tritonserver + the AFD job, supervised)."""
