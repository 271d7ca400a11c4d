"""The tritonserver process of a `step3-trt serve` run, which may be started more than once.

Each start runs in its own process group (with the python backend's stub processes) and dies
with serve. Its output is appended to one log, each start under a header line, so a crash's
last words survive the restart. Once a server is gone (stopped or crashed) the rest of its group
is killed and its python-backend shared-memory regions are removed: the backend names them
`<prefix><uuid>` in /dev/shm, and the prefix is unique to this run (server_command's
`shm_prefix`), so no other server's regions are touched.
"""

from __future__ import annotations

import signal
from pathlib import Path

from step3_trt.runtime.afd.process_group import LoggedProcess

SHM_DIR = Path("/dev/shm")


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with code {code}"


class TritonProcess(LoggedProcess):
    def __init__(self, command: list[str], env: dict[str, str], log: Path, shm_prefix: str):
        super().__init__(log, "tritonserver")
        self.command, self.env, self.shm_prefix = command, env, shm_prefix

    def start(self) -> None:
        self.launch(self.command, self.env)

    def shm_regions(self) -> list[Path]:
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def stop(self, grace_s: float) -> None:
        """SIGTERM the group (SIGKILL after `grace_s`), then remove its shared memory. Also what
        to call once the server died by itself: its stubs may outlive it for a moment."""
        self.stop_group(grace_s)
        for region in self.shm_regions():
            region.unlink(missing_ok=True)
