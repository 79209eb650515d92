"""Cheaper runs where latency does not matter: VLM Run's service tier per rule, per deployment, per backfill."""

from __future__ import annotations

import json

import boto3

from helpers import drop, jobs, read_json, result_key
from vlmwatch.core.identity import ObjectVersion
from vlmwatch_cli.ops import object_created


def sent_tiers(emulator) -> dict[str, str | None]:
    return {
        e.request["metadata"]["session_id"]: (e.request.get("config") or {}).get("service_tier")
        for e in emulator.executions.values()
    }


def settle(local, clock) -> None:
    for _ in range(10):
        local.step()
        clock.advance(30)


def test_a_rule_runs_on_its_tier_the_rest_on_the_deployment_default_and_documents_say_which(
    stack, local, wire, emulator, clock
):
    rules = [{"name": "archive", "prefix": "archive/", "agent": "doc-extractor:v1", "service_tier": "flex"}]
    wire(ROUTING_RULES=rules, SERVICE_TIER="priority")
    drop(stack, "archive/old.txt", b"an old letter")
    drop(stack, "urgent/now.txt", b"an urgent letter")
    settle(local, clock)

    by_key = {j["key"]: j["job_id"] for j in jobs(stack)}
    tiers = sent_tiers(emulator)
    assert tiers[by_key["archive/old.txt"]] == "flex"
    assert tiers[by_key["urgent/now.txt"]] == "priority"
    assert read_json(stack, result_key("archive/old.txt"))["ran"]["service_tier"] == "flex"
    assert read_json(stack, result_key("urgent/now.txt"))["ran"]["service_tier"] == "priority"


def test_auto_sends_no_tier_and_a_backfill_can_ask_for_flex(stack, local, wire, emulator, clock):
    wire()  # ServiceTier=auto: VLM Run decides, nothing is sent
    drop(stack, "plain.txt", b"plain")
    local.pump_ingest()
    # An object that was in the bucket before vlmwatch watched it: no event of its own...
    version = ObjectVersion.of(drop(stack, "old/backfilled.txt", b"an old file, a cheap run"), None)
    boto3.client("sqs").purge_queue(QueueUrl=stack.ingest_queue_url)
    # ...until `vlmwatch backfill --service-tier flex` sends one, with vlmwatch's own extension.
    event = object_created(stack.input_bucket, "old/backfilled.txt", 24, version, service_tier="flex")
    local.send_raw(json.dumps(event))
    settle(local, clock)

    tiers = {j["key"]: sent_tiers(emulator)[j["job_id"]] for j in jobs(stack)}
    assert tiers == {"plain.txt": None, "old/backfilled.txt": "flex"}
    assert read_json(stack, result_key("old/backfilled.txt"))["ran"]["service_tier"] == "flex"
    assert read_json(stack, result_key("plain.txt"))["ran"]["service_tier"] == "auto"
