"""The OpenAI server process of a `step3-trt serve --openai-port` run, supervised like
tritonserver: its own process group (dying with serve), its output appended to one log with a
header line per start, restarted by the supervisor if it dies. It is healthy once `/health`
answers 200 (it listens only after reaching the AFD job)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.process_group import LoggedProcess

# never through an HTTP proxy from the environment: the server is on this host
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class OpenAISettings:
    engines: Path
    endpoint: str  # the AFD job coordinator's
    host: str
    port: int
    startup_timeout_s: float
    heartbeat_timeout_s: float

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "step3_trt.serve.openai", "--engines",
                str(self.engines.resolve()), "--endpoint", self.endpoint, "--host", self.host,
                "--port", str(self.port), "--startup-timeout", str(self.startup_timeout_s),
                "--heartbeat-timeout", str(self.heartbeat_timeout_s)]


class OpenAIProcess(LoggedProcess):
    def __init__(self, settings: OpenAISettings, log: Path):
        super().__init__(log, "OpenAI server")
        self.settings = settings

    def start(self) -> None:
        self.launch(self.settings.command())

    def healthy(self) -> bool:
        try:
            with _OPENER.open(f"{self.settings.url}/health", timeout=2.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float) -> None:
        self.stop_group(grace_s)
