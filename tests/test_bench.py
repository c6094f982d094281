"""The benchmarks run, in their short mode (their figures come from a full
`python3 bench/run.py`, not from tests)."""
import os
import subprocess
import sys

import pytest

from streaming import HAS_PRODUCTION_STACK, ROOT


@pytest.mark.skipif(not HAS_PRODUCTION_STACK,
                    reason="the benchmarks of the production stack need uwsgi (pip) and nginx (apt-get install nginx)")
def test_every_benchmark_runs_and_the_table_is_left_alone():
    table = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(table) as handle:
        before = handle.read()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("(")]
    for benchmark in ("(1)", "(2)", "(3)", "(4)", "(5)", "(6)", "(7)", "(8)", "(9)", "(10)"):
        assert any(row.startswith(benchmark) for row in rows), benchmark
    with open(table) as handle:
        assert handle.read() == before
