"""The licence of weights files (model/licence.py): recorded in a checkpoint's metadata, else the project's."""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch

from model.checkpoint import read_weights
from model.corun import create_corun
from model.corun_checkpoint import save_corun_checkpoint
from model.export import weights_licence
from model.licence import PROJECT_LICENCE, UNKNOWN_LICENCE, licence_of

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_project_licence_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["license"]
    assert PROJECT_LICENCE == declared["text"] == "MIT"


def test_a_checkpoint_names_its_licence_in_its_metadata_or_has_the_projects() -> None:
    assert licence_of({"format": "dehaze-checkpoint/1", "metadata": {"licence": "GPL-3.0"}}) == "GPL-3.0"
    assert licence_of({"format": "dehaze-checkpoint/1", "metadata": {"step": 3}}) == "MIT"
    assert licence_of({"format": "dehaze-checkpoint/1", "metadata": {"licence": ""}}) == "MIT"
    # the authors' released files carry no licence we can read: their terms are their repositories'
    assert licence_of({"dehaze_net": {}, "depth_net": {}}) == UNKNOWN_LICENCE
    assert licence_of({"params_ema": {}}) == UNKNOWN_LICENCE


def test_a_corun_checkpoint_keeps_its_licence(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_corun("corun_tiny")
    path = save_corun_checkpoint(tmp_path / "c.pt", net, "corun_tiny", {"licence": "GPL-3.0"})
    assert licence_of(read_weights(path, "cpu")) == weights_licence(path) == "GPL-3.0"
    plain = save_corun_checkpoint(tmp_path / "plain.pt", net, "corun_tiny", {})
    assert weights_licence(plain) == "MIT"
