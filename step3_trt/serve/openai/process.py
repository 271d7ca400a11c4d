"""The OpenAI server process of a `step3-trt serve --openai-port` run, supervised like
tritonserver: its own process group (dying with serve), its output appended to one log with a
header line per start, restarted by the supervisor if it dies. It is healthy once `/health`
answers 200 (it listens only after reaching the AFD job)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.serving_job import die_with_parent, stop_group

START_MARK = "==== step3-trt serve: OpenAI server start"
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


class OpenAIProcess:
    def __init__(self, settings: OpenAISettings, log: Path):
        self.settings, self.log = settings, log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"{START_MARK} {self.starts} at {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
            log.flush()
            self.proc = subprocess.Popen(self.settings.command(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 5) -> str:
        """The last lines this start wrote."""
        text = self.log.read_text(errors="replace")
        return "\n".join(text.rsplit(START_MARK, 1)[-1].strip().splitlines()[1:][-lines:])

    def healthy(self) -> bool:
        try:
            with _OPENER.open(f"{self.settings.url}/health", timeout=2.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace_s=grace_s)
