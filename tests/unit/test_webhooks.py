"""Webhooks: signatures checked in constant time, the execution re-fetched, the same conditional update."""

from __future__ import annotations

import hashlib
import hmac
import json

import boto3
import pytest

from conftest import load_event
from helpers import drop, jobs, read_json, result_key
from vlmwatch.flows.webhooks import verify_signature
from vlmwatch_local.cloud.loops import LocalAws, function_url_event

SECRET = "whsec-test-0123456789"
SECRET_NAME = "vlmwatch/vlmrun-webhook-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, False),
        ("", False),
        ("sha256=", False),
        ("sha1=" + "0" * 40, False),
        ("sha256=" + "z" * 64, False),
        ("sha256=" + "0" * 63, False),
        ("sha256=" + "0" * 64, False),
        ("SHA256=" + sign(b"{}")[7:], False),
    ],
)
def test_verify_signature_rejects_missing_malformed_and_wrong(header, ok):
    assert verify_signature(SECRET, b"{}", header) is ok


def test_verify_signature_accepts_the_hmac_of_the_raw_body_only():
    body = b'{"id": "e1", "status": "completed"}'
    assert verify_signature(SECRET, body, sign(body))
    assert verify_signature(SECRET, body, sign(body).upper().replace("SHA256=", "sha256="))
    assert not verify_signature(SECRET, body + b" ", sign(body))
    assert not verify_signature("other-secret", body, sign(body))
    assert not verify_signature("", body, sign(body, ""))


@pytest.fixture
def hooked(stack, wire, emulator, clock):
    """Webhooks on: the secret in Secrets Manager, the emulator delivering callbacks to the real handler."""
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=SECRET)
    wire(
        CALLBACK_URL="https://hooks.example/vlmwatch",
        WEBHOOK_SECRET=SECRET_NAME,
        POLL_BASE_SECONDS="10",
        POLL_CAP_SECONDS="600",
    )
    local = LocalAws(stack)
    responses: list[dict] = []

    def deliver(url: str, body: bytes, headers: dict[str, str]) -> None:
        responses.append(local.invoke("webhook", function_url_event("POST", "/", headers, body)))

    emulator._send = deliver
    emulator.config.webhook_secret = SECRET
    emulator.config.step_seconds = 5  # executions move on the clock; callbacks fire on tick()
    return local, responses


def status_gets(emulator) -> int:
    return emulator.requests["GET /v1/agent/executions/<exec_id>"]


def post(local: LocalAws, body: bytes, signature: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-VLMRun-Signature"] = signature
    return local.invoke("webhook", function_url_event("POST", "/", headers, body))


def test_valid_callback_completes_the_job_with_no_status_poll_after_it(hooked, emulator, clock, stack):
    local, responses = hooked
    drop(stack, "hooked.txt", b"delivered by webhook")
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    job_id = jobs(stack)[0]["job_id"]
    url = execution.request["callback_url"]
    # Our URL, carrying the job, the attempt and our token: a callback to it is evidence of whose execution it is.
    assert url.startswith(f"https://hooks.example/vlmwatch?job_id={job_id}&attempt=1&token=")

    clock.advance(20)
    emulator.tick()  # VLM Run finishes and calls back

    assert [json.loads(r["body"]) for r in responses] == [{"status": "finished"}]
    assert responses[0]["statusCode"] == 200
    assert jobs(stack)[0]["status"] == "completed"
    assert status_gets(emulator) == 1  # the webhook re-fetched the execution: the body is never trusted
    local.pump_stream()
    for _ in range(3):
        clock.advance(3600)
        assert local.run_poller()["due"] == 0
    assert status_gets(emulator) == 1  # no poll after the callback
    assert read_json(stack, result_key("hooked.txt"))["response"]["file"]["text"] == "delivered by webhook"
    assert status_gets(emulator) == 1  # delivery used the execution the webhook fetched
    assert "execution_snapshot" not in jobs(stack)[0]  # dropped once delivered: rows stay small


def test_in_flight_jobs_fall_back_to_a_slow_safety_net_poll(hooked, stack):
    local, _ = hooked
    drop(stack, "slow.txt", b"x")
    local.pump_ingest()
    job = jobs(stack)[0]
    assert job["status"] == "submitted"
    # With webhooks on, polling is only the safety net: the first poll is 300 s out.
    assert int(job["next_poll_at"]) - int(job["submitted_at"]) >= 300


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=deadbeef", "md5=" + "0" * 32, "sha256=" + "0" * 64, sign(b"other body"), sign(b"x", "wrong")],
)
def test_forged_missing_and_malformed_signatures_get_401_and_change_nothing(hooked, emulator, stack, signature):
    local, _ = hooked
    drop(stack, "target.txt", b"x")
    local.pump_ingest()
    (execution_id,) = emulator.executions
    before = jobs(stack)
    body = json.dumps({"id": execution_id, "status": "completed"}).encode()

    response = post(local, body, signature)

    assert response["statusCode"] == 401
    assert json.loads(response["body"]) == {"message": "Unauthorized"}  # nothing useful to an attacker
    assert jobs(stack) == before
    assert status_gets(emulator) == 0


def test_replayed_callback_changes_nothing(hooked, emulator, clock, stack):
    local, _ = hooked
    drop(stack, "replay.txt", b"x")
    local.pump_ingest()
    clock.advance(20)
    emulator.tick()
    local.pump_stream()
    delivered = jobs(stack)
    assert delivered[0]["status"] == "delivered"
    (execution_id,) = emulator.executions
    body = json.dumps(emulator.executions[execution_id].to_json()).encode()
    gets = status_gets(emulator)

    for _ in range(3):
        response = post(local, body, sign(body))
        assert response["statusCode"] == 200
        assert json.loads(response["body"]) == {"status": "unchanged"}

    assert jobs(stack) == delivered
    assert status_gets(emulator) == gets  # a replay costs no request


def test_callback_body_is_not_trusted_the_execution_is_refetched(hooked, emulator, stack):
    local, _ = hooked
    drop(stack, "liar.txt", b"x")
    local.pump_ingest()
    (execution_id,) = emulator.executions
    body = json.dumps({"id": execution_id, "status": "completed", "response": {"forged": True}}).encode()

    response = post(local, body, sign(body))

    assert response["statusCode"] == 200
    (job,) = jobs(stack)
    assert job["status"] == "enqueued"  # what VLM Run says when asked, not what the body claimed


def test_callback_for_an_unknown_execution_is_answered_without_side_effects(hooked, emulator, stack):
    local, _ = hooked
    body = json.dumps({"id": "not-one-of-ours", "status": "completed"}).encode()

    response = post(local, body, sign(body))

    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ignored"}
    assert jobs(stack) == []
    assert status_gets(emulator) == 0


def test_bad_json_with_a_valid_signature_is_a_400(hooked):
    local, _ = hooked
    body = b"not json"
    assert post(local, body, sign(body))["statusCode"] == 400


def test_sample_event_shape_is_accepted(hooked, emulator):
    local, _ = hooked
    event = load_event("webhook-function-url.json")  # signed with another secret: a realistic forged call
    response = local.invoke("webhook", event)
    assert response["statusCode"] == 401
