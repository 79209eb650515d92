"""Every sample in events/ is accepted by the handler it is for (the shapes users will test with)."""

from __future__ import annotations

import json

import pytest

from conftest import EVENTS, load_event
from helpers import PDF_BYTES, drop, jobs, with_bucket

HANDLER_FOR = {
    "ingest-eventbridge-sqs.json": "ingest",
    # What `vlmwatch reprocess` sends: the same event, with vlmwatch's extension (run, configuration, tier).
    "ingest-reprocess-sqs.json": "ingest",
    "ingest-s3-sqs.json": "ingest",
    "ingest-s3-direct.json": "ingest",
    "poller-schedule.json": "poller",
    "complete-stream.json": "complete",
    "pollonce-step.json": "pollonce",
    "pollonce-failure.json": "pollonce",
    # AwaitCallback (stepfunctions + webhooks): the task token to keep on the job's row.
    "pollonce-await-callback.json": "pollonce",
    "webhook-function-url.json": "webhook",
}


def test_every_sample_event_names_its_handler():
    assert {p.name for p in EVENTS.glob("*.json")} == set(HANDLER_FOR)


@pytest.mark.parametrize("name", sorted(HANDLER_FOR))
def test_sample_event_is_handled(name, stack, local, emulator):
    from vlmwatch_local.cloud.loops import load_handler

    function = HANDLER_FOR[name]
    event = load_event(name)
    if function == "ingest":
        version = drop(stack, "invoices/march 2026+draft ü.pdf", PDF_BYTES, "application/pdf")
        event = with_bucket(event, stack.input_bucket, version=version)
    local.handlers.setdefault(function, load_handler(function))
    result = local.invoke(function, event)

    if function == "ingest":
        assert result in ({"batchItemFailures": []}, {"accepted": 1})
        assert [j["key"] for j in jobs(stack)] == ["invoices/march 2026+draft ü.pdf"]
        if name == "ingest-reprocess-sqs.json":
            (job,) = jobs(stack)
            assert job["run"] == 2 and json.loads(job["route"])["service_tier"] == "flex"
    elif function == "complete":
        assert result == {"batchItemFailures": []}  # a job this table does not have: nothing to deliver
    elif function == "poller":
        assert result["due"] == 0
    elif name == "pollonce-await-callback.json":
        assert result == {"job_id": event["job_id"]}  # a job this table does not have: released at once
    elif function == "pollonce":
        expected = {"job_id": event["job_id"], "status": "missing", "done": True, "wait_seconds": 0}
        assert result == {**expected, "await_callback": False}
    else:
        assert result["statusCode"] == 401  # signed with a secret this deployment does not have
        assert json.loads(result["body"]) == {"message": "Unauthorized"}
