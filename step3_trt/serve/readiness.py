"""The `afd_job` model as a switch on the server's readiness (see serve/afd_job.py).

`close` unloads `afd_job` and loads it again; the load waits (the server not ready) until
`open` creates its release file. A server started while the file is missing waits the same
way at start-up, since it loads `afd_job` itself (`hold` only removes the file). The
repository calls carry the admin key.
"""

from __future__ import annotations

import threading
from pathlib import Path

from step3_trt.serve import control
from step3_trt.serve.lockdown import AdminKey

JOB_MODEL = "afd_job"
UNLOAD_TIMEOUT_S = 60.0


class ReadinessGate:
    def __init__(self, url: str, release_file: Path, timeout_s: float, admin: AdminKey):
        self.url, self.release_file, self.timeout_s, self.admin = url, release_file, timeout_s, \
            admin
        self.loading: threading.Thread | None = None
        self.loaded = False
        self.generation = 0  # of the server the reload is for; a new server starts a new one

    def hold(self) -> None:
        """For a server that is still starting: it loads afd_job itself, and waits."""
        self.release_file.unlink(missing_ok=True)

    def close(self) -> None:
        self.hold()
        self.loaded = False
        self.loading = threading.Thread(target=self._reload, args=(self.generation,),
                                        name="load-afd_job", daemon=True)
        self.loading.start()

    def server_replaced(self) -> None:
        """The server died: a reload started for it is moot (the new server loads afd_job at
        start-up, waiting for the release file as a reload would)."""
        self.generation += 1
        self.loading = None

    def _reload(self, generation: int) -> None:
        if generation == self.generation:
            control.unload_model(self.url, JOB_MODEL, UNLOAD_TIMEOUT_S, self.admin)
        if generation == self.generation:
            loaded = control.load_model(self.url, JOB_MODEL, self.timeout_s + 60, self.admin)
            if generation == self.generation:
                self.loaded = loaded

    def open(self, wait: bool = True) -> bool:
        """Release the load; with `wait`, True once `afd_job` is loaded (the server ready)."""
        self.release_file.touch()
        loading = self.loading
        if not wait or loading is None:
            return True
        loading.join(timeout=60)
        return self.loaded
