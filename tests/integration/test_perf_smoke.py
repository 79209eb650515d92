"""The performance report's command runs, and its headline numbers hold at a small size (CI smoke)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vlmwatch_local.harness import perf

pytestmark = pytest.mark.e2e


@pytest.mark.long(seconds=10)
def test_requests_per_job_and_cost_per_mode_at_a_small_size(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    results = {m: perf.run_mode(m, jobs=8, job_seconds=120) for m in perf.MODES}

    for mode in ("schedule", "stepfunctions", "webhook", "stepfunctions+webhook"):
        assert results[mode].delivered == 8 and results[mode].failed == 0, mode
    assert results["schedule"].status_per_job <= 6
    # One state machine per job, polled by its own age-shaped waits: a handful of polls for 120 s.
    assert results["stepfunctions"].status_per_job <= 6
    assert results["stepfunctions"].transitions >= 8 * (3 + 1)
    assert results["webhook"].status_per_job <= 1
    assert results["sdk-wait"].status_per_job == 24  # every 5 s for 120 s
    assert results["webhook"].pct(0.95) <= 2
    for mode in ("schedule", "webhook"):
        assert sum(perf.cost_per_1000(results[mode]).values()) <= 0.05
    assert perf.cost_per_1000(results["stepfunctions"])["Step Functions"] > 0
    # With webhooks each state machine waits on its token: one state a job, released by the callback.
    assert results["stepfunctions+webhook"].transitions == 8
    assert results["stepfunctions+webhook"].pct(0.95) <= 2
    assert sum(perf.cost_per_1000(results["stepfunctions+webhook"]).values()) <= 0.10


def test_the_command_prints_the_side_by_side_table(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    assert perf.main(SimpleNamespace(jobs=4, job_seconds=60, write=False)) == 0
    out = capsys.readouterr().out
    for mode in perf.MODES:
        assert f"| {mode} |" in out
    assert "**total**" in out
