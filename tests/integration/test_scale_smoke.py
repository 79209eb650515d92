"""The scale model's command runs at a small size and prints its table (structure, not timings)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from vlmwatch_local.harness import scale

pytestmark = pytest.mark.e2e


def test_the_scale_table_has_a_row_per_size_with_every_measure(capsys):
    args = SimpleNamespace(
        sizes="40,80", rpm=600, job_seconds=120, full_max=40, window=3, json=None, env=["POLLER_MAX_JOBS=20"]
    )

    assert scale.main(args) == 0

    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| files in flight"))
    for column in ("longest poller run", "hottest item", "hottest index partition", "VLM Run requests / 1,000 docs"):
        assert column in header
    assert "AWS $ / 1,000 docs" in header and "drain at the plan's rate" in header
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([\d,]+) \|.*\|$", out, re.MULTILINE)}
    assert set(rows) == {"40", "80"}
    # Every job the poller claimed in one run, by name the rows written hardest, a cost and a drain time.
    for row in rows.values():
        assert re.search(r"\| [\d.]+ / [\d.]+, \d+ jobs \|", row)
        assert re.search(r"`(#[\w#-]+|job [0-9a-f]{8}…)` \d+ / [\d.]+", row)
        assert "`InFlightByNextPoll=s0`" in row
        assert re.search(r"\| [\d.]+ \| \d+ min", row)
    # 40 files run to their last document; 80 are sampled over 3 runs and extrapolated, and said so.
    assert "(extrapolated)" in rows["80"] and "(extrapolated)" not in rows["40"]
    assert "40 of 40 documents" in out
    assert "sampled: drain extrapolated" in out
    assert "80 vs 40: AWS $ per document x" in out
    # 20 jobs a run drain slower than 600 requests a minute allow: the limit is named, with its numbers.
    assert "LIMIT 80: the poller drains at most 20 jobs a minute" in out


def test_each_document_costs_one_status_look_and_its_artifact_requests_once_the_backlog_is_steady():
    result = scale.run_size(60, rpm=600, window=4, env={"POLLER_MAX_JOBS": "20"})

    assert result.sampled and result.failed == 0
    assert result.longest.claimed == 20  # a run takes what POLLER_MAX_JOBS allows, never more
    per_doc = {kind: n / result.delivered for kind, n in result.vlmrun.items()}
    assert per_doc["GET /v1/artifacts/list"] == 1 and per_doc["GET /v1/artifacts"] == 1
    assert per_doc.get("GET /v1/agent/executions/<exec_id>", 0) + per_doc.get("GET /v1/agent/executions", 0) <= 1.1
