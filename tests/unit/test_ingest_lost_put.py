"""Issue 15: a writer that loses a conditional write is told what the row holds (``ALL_OLD``) instead of
reading it again. Ingest's create is one: a redelivered event costs the put that loses, no GetItem."""

from __future__ import annotations

from typing import Any

import botocore.client
import pytest

from conftest import load_event
from helpers import drop, jobs, with_bucket


def test_a_redelivered_event_is_answered_by_the_lost_put_without_reading_the_row(
    stack, local, emulator, monkeypatch: pytest.MonkeyPatch
):
    version = drop(stack, "dup/one.txt", b"one file")
    sample = load_event("ingest-eventbridge-sqs.json")
    event = with_bucket(sample, stack.input_bucket, key="dup/one.txt", version=version)
    assert local.invoke("ingest", event) == {"batchItemFailures": []}
    (row,) = jobs(stack)
    started = len(emulator.executions)

    calls: list[tuple[str, Any]] = []
    real = botocore.client.BaseClient._make_api_call

    def spy(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            calls.append((operation, params.get("Key") or params.get("Item", {}).get("job_id")))
        return real(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    assert local.invoke("ingest", event) == {"batchItemFailures": []}

    job_reads = [c for c in calls if c[0] in ("GetItem", "Query") and row["job_id"] in str(c[1])]
    assert [op for op, _ in calls if op == "PutItem"] == ["PutItem"]  # the create that lost
    assert job_reads == []  # the row came back with the lost put: nothing read again
    assert len(emulator.executions) == started and len(jobs(stack)) == 1
