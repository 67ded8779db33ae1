"""The serving commands' start-up leaves no torch work on the main thread (``model.openmp`` says why)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from commands._common import prepare_artifact
from model.export import artifact_info, file_sha256
from service.config import Settings
from tests.service.live_server import tiny_weights

__all__ = ["tiny_weights"]  # fixture


def test_the_artifact_is_exported_and_checked_off_the_main_thread(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch_threads: list[threading.Thread] = []

    def recorded(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            torch_threads.append(threading.current_thread())
            return function(*args, **kwargs)

        return call

    for name in ("load", "trace", "freeze", "save"):
        monkeypatch.setattr(torch.jit, name, recorded(getattr(torch.jit, name)))
    settings = Settings(weights=tiny_weights, artifact=tmp_path / "served.ts.pt", device="cpu", dtype="float32")

    exported = prepare_artifact(settings)  # missing: exported
    assert artifact_info(exported)["weights_sha256"] == file_sha256(tiny_weights)
    assert torch_threads, "the export ran no TorchScript call"
    calls = len(torch_threads)
    assert prepare_artifact(settings) == exported  # up to date: only its record is read, no model loaded
    assert len(torch_threads) == calls
    assert all(thread is not threading.main_thread() and not thread.is_alive() for thread in torch_threads)
