"""Tokenization off Triton's request thread, in two lanes, so that a long prompt never holds up
a short one.

The backend's `execute` only checks a request (cheap, bounded: serve/request.py) and hands it
here. Prompts of up to FAST_LANE_CHARS characters go to the fast lane; longer ones (up to the
byte limit that the context allows) to the bulk lane. Each lane is a small thread pool;
tokenization releases the GIL (request.encode_prompt), so the lanes, the backend's I/O thread
and Triton's threads all go on while a long prompt is encoded.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

FAST_LANE_CHARS = 16 * 1024
LANE_THREADS = 2


class Admission:
    def __init__(self):
        self.fast = ThreadPoolExecutor(LANE_THREADS, thread_name_prefix="admit-fast")
        self.bulk = ThreadPoolExecutor(LANE_THREADS, thread_name_prefix="admit-bulk")

    def submit(self, prompt_chars: int, work: Callable[[], None]) -> None:
        """Run `work` (which answers its request whatever happens) on the prompt's lane."""
        lane = self.fast if prompt_chars <= FAST_LANE_CHARS else self.bulk
        lane.submit(work).add_done_callback(_report_failure)

    def close(self) -> None:
        """Finish what was handed over (each answers its request), then stop the threads."""
        self.fast.shutdown(wait=True)
        self.bulk.shutdown(wait=True)


def _report_failure(future: Future) -> None:
    """`work` answers its request itself; if even that failed (say, the client went away while
    the error was sent), say so in the server log rather than losing it in the future."""
    error = future.exception()
    if error is not None:
        traceback.print_exception(error, file=sys.stderr)
