"""One request in the AFD job, seen from the server's event loop.

The job client (serve/job_client.py) calls a request's handler from its I/O thread; here those
calls become events on an asyncio queue, read in order by the request's coroutine. `cancel`
(the HTTP client went away) is what `is_cancelled` reports, so the I/O thread sends the job a
cancel within its 50 ms poll and the owning attention rank frees the request's KV blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tokens:
    ids: list[int]  # new output tokens (streaming requests only)


@dataclass(frozen=True)
class Finished:
    result: dict  # output_ids + finish_reason, or error
    job_down: bool = False  # the error is the job's loss (restarting or gone), not this request's


class JobStream:
    def __init__(self, loop: asyncio.AbstractEventLoop, job_up: Callable[[], bool],
                 on_done: Callable[[dict], None]):
        self.loop, self.job_up, self.on_done = loop, job_up, on_done
        self.queue: asyncio.Queue[Tokens | Finished] = asyncio.Queue()
        self._cancelled = threading.Event()

    # ---- the job client's I/O thread --------------------------------------------------------
    def on_tokens(self, tokens: list[int]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, Tokens(list(tokens)))

    def on_finished(self, result: dict) -> None:
        self.on_done(result)
        event = Finished(result, job_down="error" in result and not self.job_up())
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    # ---- the event loop -----------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancelled.set()

    async def next(self) -> Tokens | Finished:
        return await self.queue.get()
