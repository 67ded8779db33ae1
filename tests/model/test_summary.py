"""Tests for ``dehaze summary`` (model/summary.py, commands/summary.py) and the variants' cost budgets."""

from __future__ import annotations

import argparse
import json

import pytest

from commands.summary import add_arguments, run
from model.pipeline import build_pipeline
from model.summary import count_params, cpu_latency_ms, format_table, pipeline_gmac, summarize


@pytest.mark.slow
def test_cost_budgets() -> None:
    # "dcmpnet_small" aims at about a tenth of the paper's 69 GMAC; the tiny test model stays well under 0.5.
    assert 6.0 < pipeline_gmac(build_pipeline("dcmpnet_small")) < 8.0
    assert pipeline_gmac(build_pipeline("dcmpnet_tiny")) < 0.5


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--json", "--variants", "dcmpnet_tiny", "--repeats", "1"])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = json.loads(lines[0])
    keys = {"name", "family", "params", "phi_params", "psi_params", "gmac_256", "cpu_ms_256"}
    assert len(lines) == 1 and set(row) == keys and row["family"] == "dcmpnet"
    pipeline = build_pipeline("dcmpnet_tiny")
    assert row["phi_params"] == count_params(pipeline.phi) and row["psi_params"] == count_params(pipeline.psi)
    assert row["params"] == row["phi_params"] + row["psi_params"]
    assert row["cpu_ms_256"] > 0


def test_corun_variants_are_summarised(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert {"corun", "corun_small", "corun_tiny"} <= set(parser.parse_args([]).variants)
    assert run(parser.parse_args(["--variants", "corun_tiny", "--no-latency"])) == 0
    table = capsys.readouterr().out
    assert "corun_tiny" in table and "corun" in table and "59,184" in table  # the CORUN tests' parameter count
    row = summarize("corun_tiny", latency=False)
    assert (row["family"], row["params"], row["phi_params"], row["psi_params"]) == ("corun", 59_184, None, None)
    assert 0.2 < row["gmac_256"] < 0.4  # 0.30 GMACs, as model/corun.py states


def test_table_and_latency_validation() -> None:
    text = format_table([{"name": "x", "phi_params": 1234, "psi_params": 5, "gmac_256": 1.5, "cpu_ms_256": None}])
    assert "1,234" in text and "1.500" in text
    with pytest.raises(ValueError):
        cpu_latency_ms(build_pipeline("dcmpnet_tiny"), repeats=0)
