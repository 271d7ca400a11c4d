"""The OpenAI-compatible HTTP server of `step3-trt serve --openai-port` (FastAPI + uvicorn), a
process of its own beside tritonserver, in front of the same AFD job (serve/job_client.py)."""
