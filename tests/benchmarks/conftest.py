"""Benchmarks run only on request: ``pytest tests/benchmarks --benchmark-only``."""
import pytest


def pytest_collection_modifyitems(config, items):
    opt = config.getoption
    if opt("benchmark_only", default=False) or opt("benchmark_enable", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest tests/benchmarks --benchmark-only`")
    here = str(config.rootpath / "tests" / "benchmarks")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)
