"""The Server-Timing header: written in the W3C syntax, read back by the benchmark, other servers' entries too."""

from __future__ import annotations

import time

from service.api.server_timing import HEADER, parse_server_timing, server_timing


def test_written_stages_read_back_with_a_total_since_the_start() -> None:
    started = time.perf_counter() - 0.25
    header = server_timing({"decode": 8.04, "compute": 583.25}, started)
    value = header[HEADER]
    assert value.startswith("decode;dur=8.0, compute;dur=583.2, total;dur=")
    stages = parse_server_timing(value)
    assert list(stages) == ["decode", "compute", "total"] and stages["total"] >= 250.0
    assert "total" not in parse_server_timing(server_timing({"compute": 1.0})[HEADER])


def test_entries_in_any_order_of_parameters_and_without_a_duration() -> None:
    value = 'cache;desc="Cache Read";dur=23.2, db;dur=53, app ;dur=47.2, miss, cpu;desc=x'
    assert parse_server_timing(value) == {"cache": 23.2, "db": 53.0, "app": 47.2}
    assert parse_server_timing("") == {}
