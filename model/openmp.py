"""Which threads run torch: one long-lived thread per process for the model, and short-lived ones for set-up.

torch's CPU kernels run on OpenMP (GNU libgomp in the PyPI wheels). libgomp gives every thread that starts a
parallel region a team of worker threads of its own, kept until that thread exits. Between parallel regions its
workers spin for a while before they sleep on a futex, so that the next region (a forward pass has over a thousand)
starts at once. But libgomp cuts the spinning to almost nothing once it manages more threads than there are CPUs:
with two teams of two on a 2-CPU machine, every worker sleeps and is woken between regions.

Measured on the 2-core machine (2026-12-01; the small model in bfloat16, 620×460 upload): a ``dehaze serve`` that had
read its artifact on the main thread at start (one team there) and then computed on an executor thread (a second
team) made about 1,500 context switches per request against about 110 with a single team, and its forward took
621 ms where the same forward on a single team took 583 ms, in turns with the plain FastAPI peer: the whole of the
8.5% by which the FastAPI and LitServe peers led ours at one client (docs/benchmarks.md, section 7).

So a worker process does all its torch work (loading, warm-up, forwards) on one :class:`ModelThread`, and work that
needs torch once (exporting the artifact at start) runs on a :func:`run_in_passing_thread`, whose team ends with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ModelThread", "run_in_passing_thread"]

T = TypeVar("T")


class ModelThread:
    """One thread, kept for the life of the process, on which every forward pass runs (see the module docstring).

    Args:
        name: the thread's name (shown by debuggers and ``py-spy``).
    """

    def __init__(self, name: str = "dehaze-model") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the model thread, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Let the thread end once its current call returns (the calls still queued are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def run_in_passing_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on a new thread that ends when it returns, so any OpenMP team it started ends too.

    Raises:
        BaseException: whatever ``function`` raised.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(function(*args))
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=target, name="dehaze-set-up")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
