"""`vlmwatch dlq redrive --limit N` takes the N oldest dead letters (what its help says): the ones waiting
longest go back to work first, the rest stay parked."""

from __future__ import annotations

import json

import boto3
import moto.sqs.models
import pytest
from test_cli_refs import cli

NOW_MS = 1_900_000_000_000


def test_redrive_limit_takes_the_oldest_messages_and_says_so(stack, monkeypatch: pytest.MonkeyPatch):
    sqs = boto3.client("sqs")
    dlq = stack.queues["IngestDLQ"]
    # Parked newest first (the queue's own order is the reverse of their age), a minute apart.
    with monkeypatch.context() as sending:
        for age_minutes in (1, 2, 3, 4, 5):
            sending.setattr(moto.sqs.models, "unix_time_millis", lambda a=age_minutes: NOW_MS - a * 60_000)
            sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"age": age_minutes}))

    code, out = cli(stack, "dlq", "redrive", "--limit", "2")

    assert code == 0 and "2 message(s) redriven" in out, out
    received = sqs.receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(json.loads(m["Body"])["age"] for m in received) == [4, 5]  # the two oldest
    assert "3 message(s)" in cli(stack, "dlq", "list")[1]
    help_text = cli(stack, "dlq", "redrive", "--help")[1]
    assert "oldest first" in help_text and "newest first" not in help_text
