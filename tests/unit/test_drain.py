"""The drain benchmark at a small size: a drop at a small plan's rate, against a VLM Run that enforces it."""

from __future__ import annotations

from vlmwatch_local.harness import drain


def test_a_small_drop_drains_at_the_plans_rate_without_a_429():
    result = drain.run(files=20, rpm=10, job_seconds=30)

    assert result.delivered == 20 and result.failed_batches == 0
    assert result.rate_limited == 0  # every request counted: VLM Run's own limit never had to say no
    assert result.by_kind["start"] == 20 and result.by_kind["artifact download"] == 20
    assert result.by_kind["artifact list"] == 20  # one per file: a delivery never stops halfway to ask again
    assert result.used_rate >= 9  # the budget used to within 10 % while work waited
    assert result.settle_seconds <= 1.2 * result.floor_seconds + 60  # one poller minute of slack at this size
    report = drain.report(result)
    assert "requests per file by kind" in report and "x the floor" in report
