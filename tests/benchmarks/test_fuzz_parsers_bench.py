"""The fuzz pass of ``tests/test_fuzz_parsers.py`` at 1,000 cases per parser. Every case runs (a
failure is recorded, not raised); distinct failures (exception type and the package line that
raised it, or a user error whose message does not name the file) are listed with the smallest
input ``hypothesis`` shrinks each to. ``extra_info``: cases run, failing cases, distinct failures.
Run:

    python -m pytest tests/benchmarks/test_fuzz_parsers_bench.py --benchmark-only -q -s
"""
from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import NoSuchExample

from test_fuzz_parsers import TARGETS, BadError, Target, check

CASES = 1000
SHRINK_TRIES = 2000


def signature(exc: BaseException) -> Tuple[str, str]:
    """``(what, where)``: the exception type (and why, for a user error with a bad message) and the
    innermost line of the package that raised it."""
    what = type(exc).__name__
    if isinstance(exc, BadError) and exc.__cause__ is not None:
        exc, what = exc.__cause__, f"{type(exc.__cause__).__name__} (message does not name the file)"
    where = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if "torchreid_privacy" in frame.filename or "test_fuzz_parsers" in frame.filename:
            where = f"{Path(frame.filename).name}:{frame.lineno}"
    return what, where


def run_recorded(target: Target, cases: int) -> Dict[str, Any]:
    """``cases`` cases of ``target``; each distinct failure with its count, message and smallest input."""
    failures: Dict[Tuple[str, str], Dict[str, Any]] = {}
    ran = [0]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = target.make(Path(tmp))

        def outcome(data) -> Tuple[str, str] | None:
            try:
                check(target, ctx, data)
            except Exception as exc:  # recorded: every case runs
                return signature(exc), exc
            return None

        @settings(max_examples=cases, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(data=target.strategy(ctx))
        def case(data):
            ran[0] += 1
            got = outcome(data)
            if got is not None:
                sig, exc = got
                seen = failures.setdefault(sig, {"count": 0, "message": str(exc)[:300], "input": data})
                seen["count"] += 1
                if len(repr(data)) < len(repr(seen["input"])):
                    seen["input"] = data

        case()
        for sig, seen in failures.items():  # the smallest input hypothesis shrinks each failure to
            try:
                seen["input"] = find(target.strategy(ctx), lambda d, sig=sig: (outcome(d) or ((None,),))[0] == sig,
                                     settings=settings(max_examples=SHRINK_TRIES, database=None, derandomize=True,
                                                       deadline=None, suppress_health_check=list(HealthCheck)))
            except NoSuchExample:
                pass  # keep the smallest recorded
    return {"cases": ran[0], "failures": failures}


def _report(name: str, result: Dict[str, Any]) -> str:
    failing = sum(f["count"] for f in result["failures"].values())
    lines = [f"{name}: {result['cases']} cases, {failing} failing, {len(result['failures'])} distinct failure(s)"]
    for (what, where), f in sorted(result["failures"].items()):
        lines.append(f"  {what} at {where} ({f['count']} case(s)): {f['message'][:160]!r}")
        lines.append(f"    smallest input: {f['input']!r:.300}")
    return "\n".join(lines)


@pytest.mark.benchmark(group="fuzz: 1,000 cases per parser")
@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_parser_1000_cases(benchmark, name):
    result = benchmark.pedantic(run_recorded, args=(TARGETS[name], CASES), rounds=1, iterations=1)
    report = _report(name, result)
    print("\n" + report)
    benchmark.extra_info.update({"cases": result["cases"],
                                 "failing_cases": sum(f["count"] for f in result["failures"].values()),
                                 "distinct_failures": len(result["failures"])})
    assert result["cases"] >= CASES * 0.9, report  # hypothesis ran (nearly) all of them
    assert not result["failures"], report
