"""Hostile input (issue 19): a signed body replayed to another job's callback URL, metadata that asks for
work no rule allows, keys that decode to another object, replays and throttles that cost requests."""

from __future__ import annotations

import hashlib
import hmac
import json

import boto3
import httpx
import pytest

from helpers import drop, jobs, read_json, result_key
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws, function_url_event
from vlmwatch_local.emulator import sign

SECRET_NAME = "vlmwatch/vlmrun-webhook-secret"
SECRET = "whsec-hostile-0123456789"


class LoseResponses(httpx.BaseTransport):
    """Forwards to the emulator, but the POST /agent/execute of the listed files reaches VLM Run (the
    execution exists) and then times out: an ambiguous submit."""

    def __init__(self, app, names: set[str]) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._names = set(names)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute"):
            file_input = json.loads(request.content)["inputs"]["file"]
            name = (file_input if isinstance(file_input, str) else "").split("?")[0].rsplit("/", 1)[-1]
            if name in self._names:
                self._names.discard(name)
                self._inner.handle_request(request)
                raise httpx.ReadTimeout("read timed out", request=request)
        return self._inner.handle_request(request)


@pytest.fixture
def hooked(stack, wire, emulator, clock):
    """Webhooks on; callbacks the emulator sends go to the real handler (and their answers are kept)."""
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=SECRET)

    def _make(transport=None):
        wire(
            transport=transport,
            CALLBACK_URL="https://hooks.example/vlmwatch",
            WEBHOOK_SECRET=SECRET_NAME,
            EVIDENCE_WINDOW_SECONDS="900",
        )
        local = LocalAws(stack)
        answers: list[dict] = []

        def deliver(url: str, body: bytes, headers: dict[str, str]) -> None:
            query = url.split("?", 1)[1] if "?" in url else ""
            answers.append(local.invoke("webhook", function_url_event("POST", "/", headers, body, query)))

        emulator._send = deliver
        emulator.config.webhook_secret = SECRET
        return local, answers

    return _make


def post(local: LocalAws, body: bytes, query: str = "", secret: str = SECRET) -> dict:
    headers = {"Content-Type": "application/json", "X-VLMRun-Signature": sign(secret, body)}
    return local.invoke("webhook", function_url_event("POST", "/", headers, body, query))


def settle(local: LocalAws, clock, rounds: int = 20) -> None:
    for _ in range(rounds):
        local.step()
        if jobs(local.stack) and all(j["status"] in ("delivered", "skipped") for j in jobs(local.stack)):
            return
        clock.advance(200)


def execution_of(emulator, job_id: str):
    (execution,) = [e for e in emulator.executions.values() if e.request["metadata"]["session_id"] == job_id]
    return execution


def status_gets(emulator) -> int:
    return emulator.requests["GET /v1/agent/executions/<exec_id>"]


# -- 1. cross-file adoption ---------------------------------------------------------------------


def test_another_jobs_signed_body_on_this_jobs_callback_url_never_swaps_results(hooked, emulator, stack, clock):
    # b.txt runs normally; a.txt's POST reached VLM Run and timed out, so a.txt waits for evidence.
    local, _ = hooked(LoseResponses(emulator.app, {"a.txt"}))
    emulator.config.status_sequence = ["running", "completed"]
    drop(stack, "b.txt", b"bravo contents")
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["a.txt"]["status"] == "received" and rows["b.txt"]["status"] == "submitted"
    a_execution = execution_of(emulator, rows["a.txt"]["job_id"])
    b_execution = emulator.executions[rows["b.txt"]["execution_id"]]
    a_query = a_execution.request["callback_url"].split("?", 1)[1]  # a.txt's genuine URL (job, attempt, token)

    # The probe: b.txt's genuine signed body, sent to a.txt's callback URL.
    b_body = json.dumps(b_execution.to_json(echo_inputs=True)).encode()
    answer = post(local, b_body, a_query)

    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"status": "refused"}
    a_row = {j["key"]: j for j in jobs(stack)}["a.txt"]
    assert a_row["status"] == "received" and "execution_id" not in a_row
    assert b_execution.id not in a_row.get("orphan_execution_ids", [])  # not recorded as a.txt's either

    # a.txt's own execution calls back: adopted; both files end with their own documents.
    a_execution.step = 1
    emulator.tick()
    settle(local, clock)
    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["a.txt"]["execution_id"] == a_execution.id
    assert read_json(stack, result_key("a.txt"))["response"]["file"]["text"] == "alpha contents"
    assert read_json(stack, result_key("b.txt"))["response"]["file"]["text"] == "bravo contents"


def test_an_execution_created_outside_the_attempts_claim_window_is_never_adopted(hooked, emulator, stack, clock):
    # Both submits are ambiguous, so no row tracks either execution, and nothing is echoed: only the claim
    # window tells them apart.
    local, _ = hooked(LoseResponses(emulator.app, {"a.txt", "b.txt"}))
    emulator.config.echo_inputs = False
    emulator.config.status_sequence = ["running", "completed"]
    drop(stack, "b.txt", b"bravo contents")
    local.pump_ingest()
    clock.advance(600)  # b.txt's execution is ten minutes older than a.txt's claim
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    rows = {j["key"]: j for j in jobs(stack)}
    b_execution = execution_of(emulator, rows["b.txt"]["job_id"])
    a_execution = execution_of(emulator, rows["a.txt"]["job_id"])
    a_query = a_execution.request["callback_url"].split("?", 1)[1]

    answer = post(local, json.dumps(b_execution.to_json()).encode(), a_query)

    assert json.loads(answer["body"]) == {"status": "refused"}
    assert {j["key"]: j for j in jobs(stack)}["a.txt"]["status"] == "received"


def test_the_url_token_is_not_keyed_by_the_signing_secret_itself(hooked, emulator, stack, clock):
    local, _ = hooked(LoseResponses(emulator.app, {"a.txt"}))
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    (job,) = jobs(stack)
    execution = execution_of(emulator, job["job_id"])
    # A token made the old way, HMAC(signing secret, "job:attempt"): exactly what VLM Run's signature over a
    # body "job:attempt" would be. It must prove nothing.
    plain = hmac.new(SECRET.encode(), f"{job['job_id']}:1".encode(), hashlib.sha256).hexdigest()[:32]
    query = f"job_id={job['job_id']}&attempt=1&token={plain}"

    answer = post(local, json.dumps(execution.to_json()).encode(), query)

    assert json.loads(answer["body"])["status"] != "adopted"
    assert jobs(stack)[0]["status"] == "received"
    genuine = execution.request["callback_url"].split("token=", 1)[1]
    assert genuine != plain
