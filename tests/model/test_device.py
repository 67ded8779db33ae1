"""model.device: one device resolver for the service, training and evaluation."""

from __future__ import annotations

import pytest
import torch

from model.device import resolve_device


def test_auto_is_cuda_when_present_else_cpu() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_an_error_not_a_cpu_fallback(name: str) -> None:
    with pytest.raises(ValueError, match=f"device '{name}' requested but CUDA is not available"):
        resolve_device(name)


def test_a_caller_can_restrict_the_names() -> None:
    with pytest.raises(ValueError, match="unknown device 'cuda:0'; expected auto, cpu or cuda"):
        resolve_device("cuda:0", ("auto", "cpu", "cuda"))
    assert resolve_device("cpu", ("auto", "cpu", "cuda")) == torch.device("cpu")
