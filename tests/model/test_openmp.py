"""The model thread runs every call on one thread of its own; a passing thread ends when its call returns."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from model.openmp import ModelThread, run_in_passing_thread


def _thread() -> tuple[int, str]:
    torch.ones(256, 256).sum()  # torch work, as the worker's calls do
    current = threading.current_thread()
    return current.ident or 0, current.name


def test_the_model_thread_runs_every_call_on_the_same_thread_off_the_event_loop() -> None:
    model_thread = ModelThread("test-model")

    async def scenario() -> tuple[list[tuple[int, str]], int]:
        seen = [await model_thread.run(_thread) for _ in range(3)]
        seen += await asyncio.gather(*(model_thread.run(_thread) for _ in range(3)))
        return seen, threading.get_ident()

    seen, loop_thread = asyncio.run(scenario())
    assert len(set(seen)) == 1
    ident, name = seen[0]
    assert ident != loop_thread and name.startswith("test-model")
    model_thread.close()
    deadline = time.monotonic() + 10
    while any(t.ident == ident for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.ident == ident for t in threading.enumerate())


def test_a_passing_thread_returns_the_result_and_is_gone_afterwards() -> None:
    ident, name = run_in_passing_thread(_thread)
    assert ident != threading.get_ident() and name == "dehaze-set-up"
    assert not any(t.ident == ident for t in threading.enumerate())


def test_a_passing_thread_raises_the_error_in_the_caller() -> None:
    def fails() -> None:
        raise KeyError("from the set-up thread")

    with pytest.raises(KeyError, match="from the set-up thread"):
        run_in_passing_thread(fails)
