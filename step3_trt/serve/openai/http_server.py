"""uvicorn for the OpenAI server, with the requests in flight failed at once on SIGINT/SIGTERM:
`stop` (on a thread, since it joins the job client's) fails them, so each stream ends with an
error event and `[DONE]` within uvicorn's grace period instead of being cut when it runs out."""

from __future__ import annotations

import threading
from collections.abc import Callable

import uvicorn

GRACE_S = 5  # uvicorn's wait for responses in progress, once their requests are failed


class StoppingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stop: Callable[[], None]):
        super().__init__(config)
        self.stop = stop

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            threading.Thread(target=self.stop, name="stop-openai", daemon=True).start()
        super().handle_exit(sig, frame)


def serve(app, host: str, port: int, stop: Callable[[], None]) -> int:
    """Until SIGINT/SIGTERM; 1 if the app did not start (the AFD job never answered)."""
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="info",
                            timeout_graceful_shutdown=GRACE_S)
    server = StoppingServer(config, stop)
    server.run()
    return 0 if server.started else 1
