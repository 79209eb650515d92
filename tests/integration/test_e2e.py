"""End to end on the local stack: moto in server mode, the emulator over real HTTP, the real handlers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from helpers import error_key, result_key
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
pytestmark = pytest.mark.e2e

RULES = [
    {"name": "scratch", "prefix": "tmp/", "skip": True, "reason": "scratch space"},
    {"name": "pdfs", "suffixes": [".pdf"], "agent": "invoice-extractor:v1"},
    {"name": "images", "content_types": ["image/*"], "prompt": "Describe the image."},
]
FILES = {
    "in/invoice.pdf": ("invoice.pdf", "application/pdf", "completed"),
    "in/photo.png": ("photo.png", "image/png", "completed"),
    "in/notes.txt": ("notes.txt", "text/plain", "completed"),
    "in/reports/Q3 résumé+final.txt": ("notes.txt", "text/plain", "completed"),
    "in/broken.pdf": ("broken.pdf", "application/pdf", "failed"),
    "in/stuck-job.txt": ("notes.txt", "text/plain", "timed_out"),
}


@pytest.mark.long(seconds=10)
def test_mixed_outcomes_duplicates_and_a_flaky_api_end_with_a_document_for_every_file():
    # The first 6 API requests get 429, the next 3 get 503: submits are retried via SQS or reconciled,
    # polls are retried in the client. Duplicated events must not start second executions.
    config = EmulatorConfig(step_seconds=0.4, first_429=6, first_5xx=3, retry_after=0)
    env = {
        "POLL_BASE_SECONDS": "1",
        "POLL_CAP_SECONDS": "2",
        "JOB_DEADLINE_SECONDS": "8",
        "SUBMIT_LEASE_SECONDS": "2",
    }
    started = time.monotonic()
    with LocalStack(
        emulator_config=config, env=env, parameters={"AgentName": "doc-extractor:v1", "RoutingRules": json.dumps(RULES)}
    ) as local:
        for key, (sample, ctype, _) in FILES.items():
            local.drop(key, (SAMPLES / sample).read_bytes(), ctype)
        local.drop("tmp/ignore-me.txt", b"scratch")
        sqs = boto3.client("sqs")
        originals = sqs.receive_message(
            QueueUrl=local.stack.ingest_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )["Messages"]
        for message in originals:  # every event delivered twice
            local.aws.send_raw(message["Body"])

        assert local.run_until_settled(expected=len(FILES) + 1, timeout=90)

        jobs = {j["key"]: j for j in local.jobs()}
        outputs = set(local.output_keys())
        emulator = local.emulator
        assert emulator is not None
    elapsed = time.monotonic() - started

    assert len(jobs) == len(FILES) + 1
    assert jobs["tmp/ignore-me.txt"]["status"] == "skipped"
    for key, (_, _, outcome) in FILES.items():
        job = jobs[key]
        assert job["status"] == "delivered", key
        assert job["outcome"] == outcome, (key, job.get("error"))
        document = result_key(key) if outcome == "completed" else error_key(key)
        assert document in outputs, key
    assert "results/in/invoice.pdf.vlmwatch/versions/" in " ".join(o for o in outputs if "/artifacts/" in o)
    # One execution per file that was not skipped, although every event arrived twice and the API flaked.
    assert len(emulator.executions) == len(FILES)
    assert emulator.requests["429"] == 6 and emulator.requests["5xx"] == 3
    print(f"\ne2e: {len(FILES) + 1} files settled in {elapsed:.1f}s; API requests: {dict(emulator.requests)}")


def test_webhooks_on_the_local_stack_finish_jobs_with_almost_no_polling():
    # Polls would only come after 60 s: every job below finishes through a signed callback to the
    # function URL served on localhost.
    config = EmulatorConfig(step_seconds=0.3)
    env = {"POLL_BASE_SECONDS": "60", "POLL_CAP_SECONDS": "600"}
    with LocalStack(
        emulator_config=config, env=env, webhook=True, parameters={"AgentName": "doc-extractor:v1"}
    ) as local:
        for name in ("invoice.pdf", "photo.png", "notes.txt", "broken.pdf"):
            local.drop(f"hook/{name}", (SAMPLES / name).read_bytes())
        assert local.run_until_settled(expected=4, timeout=30)
        jobs = {j["key"]: j for j in local.jobs()}
        emulator = local.emulator
        assert emulator is not None
        callbacks = list(emulator.callbacks)
        outputs = set(local.output_keys())

    assert len(callbacks) == 4 and all(c["ok"] for c in callbacks)
    assert all(int(j["poll_count"]) == 0 for j in jobs.values())  # no scheduled poll was needed
    assert jobs["hook/broken.pdf"]["outcome"] == "failed"
    assert error_key("hook/broken.pdf") in outputs
    assert {result_key(f"hook/{n}") for n in ("invoice.pdf", "photo.png", "notes.txt")} <= outputs
