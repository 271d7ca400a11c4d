"""A supervised child process that may be started more than once: each start runs in its own
process group, dies with its parent, and appends its output to one log under a header line, so
a crash's last words survive the restart. The AFD job (runtime/afd/serving_job.py), tritonserver
(serve/server_process.py) and the OpenAI server (serve/openai/process.py) are such processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the process that started it dies (Linux), so a
    killed `serve` leaves no job or server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s`; reaps the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the leader may be gone while other members of its group linger
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class LoggedProcess:
    """Starts of one command line, each logged to `log` after a line `{what} start N at TIME`."""

    def __init__(self, log: Path, what: str):
        self.log, self.mark = log, f"==== step3-trt serve: {what} start"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_start = 0  # where the output of the last start begins

    def launch(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"{self.mark} {self.starts} at {time.strftime('%Y-%m-%d %H:%M:%S')} "
                      f"====\n".encode())
            log.flush()
            self.log_start = log.tell()
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def output(self) -> str:
        """What the last start wrote."""
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 5) -> str:
        """The last lines the last start wrote."""
        return "\n".join(self.output().strip().splitlines()[-lines:])

    def stop_group(self, grace_s: float) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace_s=grace_s)
