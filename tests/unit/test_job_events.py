"""Events for integrations: one versioned detail schema, one test per event shape."""

from __future__ import annotations

import json

import boto3
import pytest

from helpers import drop, jobs
from vlmwatch.adapters.job_events import SCHEMA, JobEventDetail


@pytest.fixture
def captured(stack):
    """An EventBridge rule like the README's example, delivering every vlmwatch event to a queue."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="vlmwatch-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(
        Name="vlmwatch-jobs",
        EventPattern=json.dumps(
            {"source": ["vlmwatch"], "detail-type": ["Job Started", "Job Completed", "Job Failed"]}
        ),
    )
    events.put_targets(Rule="vlmwatch-jobs", Targets=[{"Id": "q", "Arn": arn}])

    def read() -> list[dict]:
        out = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return out
            for message in batch:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return read


def settle(local, clock, emulator) -> None:
    for _ in range(6):
        clock.advance(600)
        emulator.tick()
        local.run_poller()
        local.pump_stream()


def by_type(events: list[dict], job_id: str) -> dict[str, dict]:
    return {e["detail-type"]: e for e in events if e["detail"]["job_id"] == job_id}


def test_job_started_says_which_execution_runs_which_object(stack, local, emulator, clock, captured):
    version = drop(stack, "invoices/a.txt", b"total 42")
    local.pump_ingest()

    (event,) = captured()
    assert event["source"] == "vlmwatch" and event["detail-type"] == "Job Started"
    detail = JobEventDetail.model_validate(event["detail"])
    (execution_id,) = emulator.executions
    assert event["detail"]["schema"] == SCHEMA == "vlmwatch.job-event/v1"
    assert detail.status == "submitted" and detail.execution_id == execution_id
    assert detail.source.model_dump() == {"bucket": stack.input_bucket, "key": "invoices/a.txt", "version_id": version}
    assert detail.agent == "doc-extractor:v1" and detail.rule == "default"
    assert detail.document is None and detail.error is None


def test_job_completed_points_at_the_result_document(stack, local, emulator, clock, captured):
    drop(stack, "b.txt", b"hello")
    local.pump_ingest()
    settle(local, clock, emulator)

    (job,) = jobs(stack)
    shapes = by_type(captured(), job["job_id"])
    assert set(shapes) == {"Job Started", "Job Completed"}
    detail = shapes["Job Completed"]["detail"]
    assert detail["schema"] == SCHEMA and detail["status"] == "completed"
    assert detail["document"] == job["result_uri"] and detail["document"].endswith("/result.json")
    assert detail["error"] is None


def test_job_failed_says_why_and_points_at_the_error_document(stack, local, emulator, clock, captured):
    drop(stack, "fail-me.txt", b"x")
    local.pump_ingest()
    settle(local, clock, emulator)

    (job,) = jobs(stack)
    detail = by_type(captured(), job["job_id"])["Job Failed"]["detail"]
    assert detail["schema"] == SCHEMA and detail["status"] == "failed"
    assert "could not extract anything" in detail["error"]
    assert detail["document"] == job["error_uri"] and detail["document"].endswith("/error.json")


def test_the_documented_schema_matches_the_model():
    from pathlib import Path

    documented = json.loads(
        Path(__file__).resolve().parents[2].joinpath("docs", "job-event.v1.schema.json").read_text()
    )
    assert documented == JobEventDetail.json_schema_v1()


def test_library_log_lines_reach_the_handlers_json_log_with_the_job_id():
    """In Lambda, vlmwatch.* lines go through the handler's powertools Logger (CloudWatch, JSON, its keys)."""
    import io
    import logging

    from aws_lambda_powertools import Logger

    from vlmwatch.runtime.handler_kit import route_library_logs

    stream = io.StringIO()
    handler_logger = Logger(service="vlmwatch-test", stream=stream)
    package = logging.getLogger("vlmwatch")
    saved = (package.handlers[:], package.propagate, package.level)
    try:
        route_library_logs(handler_logger, force=True)
        handler_logger.append_keys(job_id="job-123")
        logging.getLogger("vlmwatch.flows.delivery").info("delivered", extra={"uri": "s3://out/x"})
    finally:
        package.handlers, package.propagate = saved[0], saved[1]
        package.setLevel(saved[2])
        handler_logger.remove_keys(["job_id"])
    (line,) = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    assert line["message"] == "delivered" and line["job_id"] == "job-123" and line["uri"] == "s3://out/x"
    assert line["name"] == "vlmwatch.flows.delivery" and line["service"] == "vlmwatch-test"
