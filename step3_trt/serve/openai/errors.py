"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, with its HTTP status.

400 the client's input (`invalid_request_error`), 404 an unknown model or route, 413 a body
larger than any request that could fit the context, 503 while the AFD job is unavailable
(restarting, or gone), 500 a failure of ours (`server_error`).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = \
            status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, f"{param} is not supported: {why}", param=param, code="unsupported")


def unknown_model(name: str, served: str) -> ApiError:
    return ApiError(404, f"the model {name!r} does not exist; this server serves {served!r}",
                    param="model", code="model_not_found")


def too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request body ({size}+ bytes) is larger than any request that fits "
                         f"the context ({limit} bytes at most)", code="request_too_large")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, kind="server_error", code="job_unavailable")


def internal(message: str) -> ApiError:
    return ApiError(500, f"internal error: {message}", kind="server_error")
