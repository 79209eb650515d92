"""The scale model's command runs at a small size and prints its table (structure, not timings)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from vlmwatch_local.harness import scale

pytestmark = pytest.mark.e2e


@pytest.mark.long(seconds=11)
def test_the_scale_table_has_a_row_per_size_with_every_measure(capsys):
    args = SimpleNamespace(
        sizes="40,120", rpm=120, job_seconds=120, full_max=40, window=3, json=None, env=["POLLER_MAX_JOBS=20"]
    )

    assert scale.main(args) == 0

    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| files in flight"))
    for column in ("longest poller run", "hottest item", "hottest index partition", "VLM Run requests / 1,000 docs"):
        assert column in header
    assert "AWS $ / 1,000 docs" in header and "drain at the plan's rate" in header and "rate floor" in header
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([\d,]+) \|.*\|$", out, re.MULTILINE)}
    assert set(rows) == {"40", "120"}
    # Every job the poller claimed in one run and the pages it read, by name the rows written hardest, a cost
    # and a drain time against the rate floor.
    for row in rows.values():
        assert re.search(r"\| [\d.]+ / [\d.]+, \d+ jobs, \d+ pages \|", row)
        assert re.search(r"`(#[\w#-]+|job [0-9a-f]{8}…)` \d+ / [\d.]+", row)
        assert "`InFlightByNextPoll=s0`" in row
        assert re.search(r"\| [\d.]+ \| \d+ min", row) and re.search(r"\d+ min \(x[\d.]+\) \|$", row)
    # 40 files run to their last document; 120 are sampled over 3 runs and extrapolated, and said so.
    assert "(extrapolated)" in rows["120"] and "(extrapolated)" not in rows["40"]
    assert "40 of 40 documents" in out
    assert "sampled: drain extrapolated" in out
    assert "120 vs 40: AWS $ per document x" in out
    # POLLER_MAX_JOBS is a page: a run reads page after page while the minute's requests serve them.
    most = int(re.search(r"- 120: .*Poller runs: at most (\d+) jobs in (\d+) pages", out).group(1))
    assert most > 20


def test_each_document_costs_one_status_look_and_its_artifact_requests_once_the_backlog_is_steady():
    result = scale.run_size(300, rpm=60, window=6, env={"POLLER_MAX_JOBS": "8"})

    assert result.sampled and result.failed == 0
    steady = result.runs[len(result.runs) // 2 :]
    # A run takes what the minute's 60 requests serve: one executions list (it answers for none: the backlog
    # is older than the newest executions, so GETs from then on), then a status GET per job and the artifact
    # list and download its delivery sets off. 19 jobs in pages of 8, never more.
    assert [r.claimed for r in steady] == [(60 - 1) // 3] * len(steady)
    assert all(r.pages == 4 and r.stopped == "budget" for r in steady)
    per_doc = {kind: n / result.delivered for kind, n in result.vlmrun.items()}
    assert per_doc["GET /v1/artifacts/list"] == 1 and per_doc["GET /v1/artifacts"] == 1
    assert per_doc.get("GET /v1/agent/executions/<exec_id>", 0) + per_doc.get("GET /v1/agent/executions", 0) <= 1.1
