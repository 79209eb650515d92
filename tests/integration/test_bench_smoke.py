"""A small version of `make bench` in CI: the load path works and its accounting holds (no timing asserts)."""

from __future__ import annotations

import pytest

from vlmwatch_local.harness.bench import run

pytestmark = pytest.mark.e2e


def test_bench_smoke_every_file_once_and_no_history_in_the_poll_index(capsys):
    result = run(30, step_seconds=0.2, timeout=60)
    print(result.report())
    assert result.delivered == result.executions == 30
    assert result.requests["POST /v1/agent/execute"] == 30  # never a duplicate execution
    assert result.index_items_after == 0  # finished jobs leave the poller's index
