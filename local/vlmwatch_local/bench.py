"""Moved to :mod:`vlmwatch_local.harness.bench`.

An alias until ``tests/integration/test_bench_smoke.py`` imports from the new home; then delete this file.
"""

from vlmwatch_local.harness.bench import BenchResult, run

__all__ = ["BenchResult", "run"]
