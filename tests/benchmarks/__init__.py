"""Benchmarks of the model and the service: each module is one command that prints a table and writes JSON.

Run them from the repository root, e.g. ``python -m tests.benchmarks.bench_model --out runs/benchmarks/model.json``;
``tests/benchmarks/README.md`` lists every command. They are not part of the default test run.
"""
