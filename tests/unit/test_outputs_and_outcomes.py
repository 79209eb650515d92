"""Outputs that never collide or go stale, deliveries that are never given up, outcomes that say what happened."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from helpers import PDF_BYTES, drop, error_key, jobs, output_keys, read_json, result_key
from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch_local.cloud.loops import LocalAws


def settle(local: LocalAws, clock, rounds: int = 25, step: int = 200) -> None:
    for _ in range(rounds):
        local.step()
        if jobs(local.stack) and all(j["status"] in ("delivered", "skipped") for j in jobs(local.stack)):
            return
        clock.advance(step)


def by_key(stack) -> dict[str, dict]:
    return {j["key"]: j for j in jobs(stack)}


def test_an_older_version_finishing_last_never_replaces_the_newer_document(stack, local, emulator, clock):
    old = drop(stack, "report.txt", b"version one")
    new = drop(stack, "report.txt", b"version two")
    local.pump_ingest()
    executions = {
        e.request["inputs"]["file"].split("versionId=")[1].split("&")[0]: e for e in emulator.executions.values()
    }
    executions[old].plan = ["running"] * 6 + ["completed"]  # the old version finishes long after the new one

    settle(local, clock, step=30)

    stable = read_json(stack, result_key("report.txt"))
    assert stable["source"]["version_id"] == new and stable["response"]["file"]["text"] == "version two"
    folder = "results/report.txt.vlmwatch/versions/"
    assert read_json(stack, f"{folder}{old}/result.json")["response"]["file"]["text"] == "version one"
    assert read_json(stack, f"{folder}{new}/result.json")["response"]["file"]["text"] == "version two"
    artifacts = [k for k in output_keys(stack) if "/artifacts/" in k]
    assert {k.split("/versions/")[1].split("/")[0] for k in artifacts} == {old, new}  # never mixed in one folder


def test_a_failed_version_leaves_no_error_document_once_a_newer_one_succeeds(stack, local, emulator, clock):
    drop(stack, "scan.pdf", b"%PDF-1.4 broken", "application/pdf")
    settle(local, clock)
    assert error_key("scan.pdf") in output_keys(stack)

    new = drop(stack, "scan.pdf", PDF_BYTES, "application/pdf")
    settle(local, clock)

    keys = output_keys(stack)
    assert error_key("scan.pdf") not in keys  # one outcome at the stable path: the newest
    assert read_json(stack, result_key("scan.pdf"))["source"]["version_id"] == new
    assert sum(k.endswith("/error.json") for k in keys) == 1  # the failed version keeps its own record


def test_no_input_key_writes_over_another_keys_outputs(stack, local, emulator, clock):
    keys = [
        "a.txt",
        "a.txt.error",
        "a.txt.json",
        "a.txt.artifacts/x",
        "a.txt.vlmwatch/result.json",
        "a.txt.vlmwatch/versions/v",
    ]
    for key in keys:
        drop(stack, key, f"contents of {key}".encode())

    settle(local, clock)

    s3 = boto3.client("s3")
    owners: dict[str, set[str]] = {}
    for version in s3.list_object_versions(Bucket=stack.output_bucket)["Versions"]:
        head = s3.head_object(Bucket=stack.output_bucket, Key=version["Key"], VersionId=version["VersionId"])
        owners.setdefault(version["Key"], set()).add(head["Metadata"]["vlmwatch-job-id"])
    assert all(len(ids) == 1 for ids in owners.values())  # every output key was only ever written for one file
    for key in keys:
        if ".vlmwatch/" in key:
            continue  # inside another key's output folder: skipped with a reason, never processed
        assert read_json(stack, result_key(key))["response"]["file"]["text"] == f"contents of {key}"
    skipped = {j["key"] for j in jobs(stack) if j["status"] == "skipped"}
    assert skipped == {k for k in keys if ".vlmwatch/" in k}


def test_a_key_too_long_for_the_output_layout_still_gets_its_documents(stack, local, emulator, clock):
    key = "deep/" + "n" * 990 + ".txt"
    drop(stack, key, b"long key")

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "completed"
    keys = output_keys(stack)
    assert keys and all(len(k.encode()) <= 1024 for k in keys)  # S3's limit, which moto does not enforce
    stable = next(
        k
        for k in keys
        if ".vlmwatch-long/" in k
        and k.endswith(".vlmwatch-long/" + k.split(".vlmwatch-long/")[1].split("/")[0] + "/result.json")
    )
    assert read_json(stack, stable)["source"]["key"] == key


def test_outputs_denied_past_the_streams_retries_are_delivered_by_the_sweeper(
    stack, local, emulator, clock, monkeypatch
):
    real_put = OutputWriter._put
    denied = {"on": True}

    def put(self, key, body, content_type, job):
        if denied["on"]:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")
        return real_put(self, key, body, content_type, job)

    monkeypatch.setattr(OutputWriter, "_put", put)
    emulator.config.status_sequence = ["completed"]
    drop(stack, "later.txt", b"delivered late")
    local.pump_ingest()
    clock.advance(60)
    local.run_poller()
    for _ in range(6):
        local.pump_stream()  # every attempt fails; the loop does not crash when the whole batch fails
    assert len(local.parked) == 1  # the stream gave up: in AWS only shard and sequence numbers remain
    (job,) = jobs(stack)
    assert job["status"] == "completed" and "AccessDenied" in job["delivery_error"]

    denied["on"] = False
    clock.advance(3600)
    assert local.run_poller()["redelivered"] == 1

    (job,) = jobs(stack)
    assert job["status"] == "delivered"
    assert read_json(stack, result_key("later.txt"))["response"]["file"]["text"] == "delivered late"


def test_cancelled_at_vlmrun_fails_the_job_and_says_so(stack, local, emulator, clock):
    emulator.config.status_sequence = ["running", "cancelled"]
    drop(stack, "cancel.txt", b"x")
    settle(local, clock)
    (job,) = jobs(stack)
    assert job["outcome"] == "failed" and job["remote_status"] == "cancelled"
    assert "cancelled at VLM Run" in read_json(stack, error_key("cancel.txt"))["error"]["message"]


def test_an_unknown_status_keeps_the_job_in_flight_and_the_timeout_names_it(stack, wire, emulator, clock):
    wire(JOB_DEADLINE_SECONDS="600")
    local = LocalAws(stack)
    emulator.config.status_sequence = ["warming_up"] * 50 + ["completed"]
    drop(stack, "new-status.txt", b"x")
    local.pump_ingest()
    clock.advance(60)
    local.run_poller()
    assert jobs(stack)[0]["status"] == "submitted" and jobs(stack)[0]["remote_status"] == "warming_up"

    settle(local, clock)

    message = read_json(stack, error_key("new-status.txt"))["error"]["message"]
    assert "last remote status: warming_up (a status vlmwatch does not know)" in message


def test_a_huge_error_message_is_kept_bounded_not_lost(stack, local, emulator, clock):
    drop(stack, "fail-loudly.txt", b"x")  # "fail" in the name: the emulator fails it
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    execution.error = "the agent said: " + "e" * 500_000

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["outcome"] == "failed"
    message = read_json(stack, error_key("fail-loudly.txt"))["error"]["message"]
    assert message.startswith("the agent said: eee") and "more characters cut" in message
    assert len(message) <= 4000


@pytest.mark.parametrize("first_poll", [100])
def test_a_job_that_finished_at_vlmrun_is_never_declared_timed_out(stack, wire, emulator, clock, first_poll):
    wire(JOB_DEADLINE_SECONDS="60", POLL_BASE_SECONDS=str(first_poll), POLL_CAP_SECONDS=str(first_poll))
    local = LocalAws(stack)
    emulator.config.status_sequence = ["running", "completed"]
    drop(stack, "finished-late.txt", b"done before the deadline, polled after it")
    local.pump_ingest()
    clock.advance(first_poll)  # the first poll comes after the deadline

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["outcome"] == "completed"  # one last look before declaring a timeout


def test_an_input_above_the_size_limit_fails_with_an_error_document_and_is_never_uploaded(stack, wire, emulator, clock):
    wire(INPUT_MODE="upload", MAX_OBJECT_BYTES="1000")
    local = LocalAws(stack)
    drop(stack, "big/scan.txt", b"x" * 5000)

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["outcome"] == "failed"
    message = read_json(stack, error_key("big/scan.txt"))["error"]["message"]
    assert message == "the input is 5,000 bytes, above the 1,000-byte limit (MaxObjectBytes): not uploaded"
    assert not any(k.startswith(("POST /v1/files", "PUT /_uploads")) for k in emulator.requests)
    assert emulator.executions == {}


def test_an_artifact_above_the_size_limit_is_listed_with_the_reason_and_the_result_still_lands(
    stack, wire, emulator, clock
):
    wire(MAX_OBJECT_BYTES="50")  # the emulator's preview image is larger
    local = LocalAws(stack)
    drop(stack, "small/note.txt", b"hello")

    settle(local, clock)

    document = read_json(stack, result_key("small/note.txt"))
    assert document["response"]["file"]["text"] == "hello"
    assert document["artifacts"] == []
    (missing,) = document["missing_artifacts"]
    assert "above the 50-byte limit (MaxObjectBytes): not copied" in missing["error"]
    assert not [k for k in output_keys(stack) if "/artifacts/" in k]


def test_a_runs_document_is_told_from_artifacts_and_other_keys_by_the_layout():
    from vlmwatch.core.identity import ObjectVersion
    from vlmwatch.core.layout import OutputLayout

    layout, v = OutputLayout("out", "results/"), ObjectVersion.of("v1", None)
    assert layout.document_run("a.pdf", layout.result_key("a.pdf", v)) == 1
    assert layout.document_run("a.pdf", layout.error_key("a.pdf", v, 3)) == 3
    assert layout.document_run("a.pdf", layout.artifact_key("a.pdf", v, "img_1", "image/png")) is None
    assert layout.document_run("a.pdf", layout.latest_keys("a.pdf")[0]) is None
    assert layout.document_run("b.pdf", layout.result_key("a.pdf", v)) is None
