"""A small run of the fault harness (``make chaos`` runs 1,000 files): every invariant must hold."""

from __future__ import annotations

import logging

import pytest

from vlmwatch_local.harness.chaos import ChaosConfig, run

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("webhook", [False, True], ids=["polling", "webhooks"])
def test_faults_everywhere_and_still_nothing_lost_wrong_stale_or_duplicated(webhook, monkeypatch):
    # Every injected fault is logged by the handlers, as in CloudWatch: too loud for a test run.
    monkeypatch.setattr(logging.getLogger("vlmwatch"), "level", logging.CRITICAL)
    config = ChaosConfig(
        files=30, webhook=webhook, seed=11, timeout=240, job_deadline_seconds=15, late_seconds=10, second_versions=0.1
    )
    report = run(config, log=lambda _: None)

    print("\n" + report.table())
    assert report.problems == []
    assert report.ok
    assert report.lost == report.wrong == report.stale == report.duplicates_unexplained == 0
    assert report.left_in_flight == 0 and report.dlq_unaccounted == 0
    # The run really was under fire, and every version got exactly one outcome.
    assert report.faults.get("429", 0) > 0 and report.faults.get("5xx", 0) > 0
    assert sum(report.outcomes.values()) == report.versions
