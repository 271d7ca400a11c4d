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
import subprocess
import time
from pathlib import Path

from step3_trt.runtime.afd.serving_job import die_with_parent, stop_group

SHM_DIR = Path("/dev/shm")
START_MARK = "==== step3-trt serve: tritonserver start"


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with code {code}"


class TritonProcess:
    def __init__(self, command: list[str], env: dict[str, str], log: Path, shm_prefix: str):
        self.command, self.env, self.log, self.shm_prefix = command, env, log, shm_prefix
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"{START_MARK} {self.starts} at {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
            log.flush()
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 5) -> str:
        """The last lines this start wrote."""
        text = self.log.read_text(errors="replace")
        return "\n".join(text.rsplit(START_MARK, 1)[-1].strip().splitlines()[1:][-lines:])

    def shm_regions(self) -> list[Path]:
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def stop(self, grace_s: float) -> None:
        """SIGTERM the group (SIGKILL after `grace_s`), then remove its shared memory. Also what
        to call once the server died by itself: its stubs may outlive it for a moment."""
        if self.proc is not None:
            stop_group(self.proc, grace_s=grace_s)
        for region in self.shm_regions():
            region.unlink(missing_ok=True)
