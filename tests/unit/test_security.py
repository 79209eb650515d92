"""Security: secrets that rotate, no leaked URLs or keys, input we do not trust kept in its place."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging

import boto3
import httpx
import pytest

from conftest import load_event
from helpers import drop, error_key, jobs, read_json, result_key, with_bucket
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.core.errors import VlmRunAmbiguousSubmitError, VlmRunError
from vlmwatch.core.redact import sanitize
from vlmwatch.core.routing import Route, RuleSet, Skip
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws, function_url_event

SECRET_NAME = "vlmwatch/vlmrun-webhook-secret"
OLD, NEW, NEWER = "whsec-old-0123456789", "whsec-new-0123456789", "whsec-newer-0123456789"
SIGNED_URL = (
    "https://in.s3.amazonaws.com/a.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261125"
    "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE&X-Amz-Signature=0123456789abcdef0123456789abcdef"
)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback(local: LocalAws, body: bytes, signature: str | None, query: str = "") -> dict:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-VLMRun-Signature"] = signature
    return local.invoke("webhook", function_url_event("POST", "/", headers, body, query))


def count_secret_reads() -> list[str]:
    """Every GetSecretValue the runtime's client makes, by version stage."""
    calls: list[str] = []
    client = wiring._boto("secretsmanager")
    client.meta.events.register(
        "before-call.secrets-manager.GetSecretValue",
        lambda params, **_: calls.append(params.get("VersionStage", "AWSCURRENT")),
    )
    return calls


@pytest.fixture
def hooked(stack, wire, emulator, clock):
    """Webhooks on, the signing secret in Secrets Manager, cached for 300 s."""
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=OLD)
    wire(CALLBACK_URL="https://hooks.example/vlmwatch", WEBHOOK_SECRET=SECRET_NAME, SECRET_MAX_AGE_SECONDS="300")
    return LocalAws(stack)


# -- secrets ------------------------------------------------------------------------------------


def test_a_rotated_webhook_secret_is_picked_up_and_the_previous_one_accepted_in_the_window(hooked, emulator, clock):
    local = hooked
    body = json.dumps({"id": "e-unknown", "status": "completed"}).encode()
    assert callback(local, body, sign(body, OLD))["statusCode"] == 200

    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET_NAME, SecretString=NEW)  # rotation
    clock.advance(301)  # past the max age: the cache reads again

    assert callback(local, body, sign(body, NEW))["statusCode"] == 200  # no 401 until a cold start
    assert callback(local, body, sign(body, OLD))["statusCode"] == 200  # AWSPREVIOUS: in-flight callbacks

    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET_NAME, SecretString=NEWER)
    clock.advance(301)
    assert callback(local, body, sign(body, NEWER))["statusCode"] == 200
    assert callback(local, body, sign(body, NEW))["statusCode"] == 200
    assert callback(local, body, sign(body, OLD))["statusCode"] == 401  # two rotations ago: gone


def test_callback_tokens_made_before_a_rotation_still_prove_their_job(hooked, emulator, clock, stack):
    local = hooked
    drop(stack, "rotating.txt", b"x")
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    query = execution.request["callback_url"].split("?", 1)[1]  # token made with OLD
    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET_NAME, SecretString=NEW)
    clock.advance(301)
    jobs_before = jobs(stack)
    assert jobs_before[0]["status"] == "submitted"

    body = json.dumps({"id": execution.id, "status": "completed"}).encode()
    response = callback(local, body, sign(body, NEW), query)

    assert response["statusCode"] == 200
    assert wiring.webhook_receiver()._attempt_from(
        dict(p.split("=", 1) for p in query.split("&")), wiring.webhook_secrets()
    ) == (jobs_before[0]["job_id"], 1)


def test_a_missing_webhook_secret_is_one_clear_error_not_a_call_per_request(stack, wire, caplog):
    wire(CALLBACK_URL="https://hooks.example/vlmwatch", WEBHOOK_SECRET="vlmwatch/does-not-exist")
    local = LocalAws(stack)
    reads = count_secret_reads()
    body = b'{"id": "e1"}'

    with caplog.at_level(logging.WARNING):
        responses = [callback(local, body, sign(body, "anything")) for _ in range(20)]

    assert {r["statusCode"] for r in responses} == {503}  # VLM Run retries; nothing is lost meanwhile
    assert reads == ["AWSCURRENT"]  # remembered for the max age
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "webhook secret" in r.getMessage()]
    assert len(errors) == 1
    assert "not found in Secrets Manager" in errors[0].error  # type: ignore[attr-defined]


def test_forged_requests_are_logged_at_a_rate_that_cannot_flood(hooked, caplog):
    local = hooked
    body = b'{"id": "e1"}'
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            assert callback(local, body, sign(body, "forged"))["statusCode"] == 401
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1
    assert rejected[0].occurrences == 1  # type: ignore[attr-defined]


def test_an_execution_id_that_is_not_an_id_never_reaches_a_url(hooked, emulator):
    local = hooked
    body = json.dumps({"id": "../../files/x", "status": "completed"}).encode()
    response = callback(local, body, sign(body, OLD))
    assert response["statusCode"] == 400
    assert sum(emulator.requests.values()) == 0


# -- remote text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"could not download the input file from {SIGNED_URL}: HTTP 403",
        json.dumps({"detail": f"fetch failed: {SIGNED_URL}"}),
        "X-Amz-Signature=0123456789abcdef0123456789abcdef&X-Amz-Credential=ASIAEXAMPLE",
    ],
)
def test_sanitize_strips_signed_urls_and_bounds_length(text):
    clean = sanitize(text * 3, limit=400)
    assert "0123456789abcdef" not in clean and "ASIAEXAMPLE" not in clean and "IQoJb3J" not in clean
    assert len(clean) <= 400


def test_a_fetch_error_quoting_the_presigned_url_leaks_no_signature(stack, local, emulator, clock):
    drop(stack, "unfetchable.pdf", b"%PDF-1.4 x")
    local.pump_ingest()
    emulator.tick()
    for _ in range(5):
        clock.advance(600)
        emulator.tick()
        local.run_poller()
        local.pump_stream()

    (job,) = jobs(stack)
    assert job["outcome"] == "failed"
    document = read_json(stack, error_key("unfetchable.pdf"))
    message = document["error"]["message"]
    assert "could not download the input file from https://" in message  # the explanation stays
    text = json.dumps(job, default=str) + json.dumps(document)
    assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text


# -- untrusted input ----------------------------------------------------------------------------


def test_ingest_refuses_an_event_for_another_bucket_and_does_not_retry_it(stack, local):
    drop(stack, "ok.txt", b"x")
    event = with_bucket(load_event("ingest-eventbridge-sqs.json"), stack.output_bucket, key="ok.txt")

    response = local.invoke("ingest", event)

    assert response == {"batchItemFailures": []}  # recorded and dropped: retrying cannot make it right
    assert jobs(stack) == []


OPTED_IN = RuleSet.model_validate([{"name": "any", "agent": "doc-extractor:v1", "metadata_agent": True}])


@pytest.mark.parametrize("name", ["a/../../admin", "../x", "x//y", "/abs", "x" * 200, "bad name", ""])
def test_a_metadata_override_must_be_an_agent_name(name):
    decision = OPTED_IN.resolve("a.pdf", "application/pdf", {"vlmrun-agent": name}, allowed_agents={"x"})
    assert isinstance(decision, Skip)
    assert "not a valid agent name" in decision.reason


def test_a_metadata_override_never_bypasses_a_skip_rule():
    rules = RuleSet.model_validate(
        [
            {"name": "private", "prefix": "private/", "skip": True, "reason": "private files are not sent out"},
            {"name": "public", "prefix": "public/", "agent": "doc-extractor:v1", "metadata_agent": True},
        ]
    )
    allowed = {"doc-extractor", "team/invoices:v2"}
    skipped = rules.resolve("private/a.pdf", "application/pdf", {"vlmrun-agent": "doc-extractor:v1"})
    assert skipped == Skip(rule="private", reason="private files are not sent out")
    routed = rules.resolve(
        "public/a.pdf", "application/pdf", {"vlmrun-agent": "team/invoices:v2"}, allowed_agents=allowed
    )
    assert routed == Route(rule="metadata", agent="team/invoices:v2")


def _client(handler) -> VlmRunClient:
    return VlmRunClient("https://api.vlm.run/v1", "key", transport=httpx.MockTransport(handler), sleep=lambda _: None)


def test_ids_from_responses_are_validated_before_they_go_into_a_url():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(201, json={"id": "../../admin", "status": "pending"})

    client = _client(handler)
    with pytest.raises(VlmRunAmbiguousSubmitError):
        client.execute({"name": "a", "inputs": {"file": "https://x/a.pdf"}})
    with pytest.raises(ValueError, match="not a valid VLM Run id"):
        client.get_execution("../../admin")
    with pytest.raises(ValueError, match="not a valid VLM Run id"), client.open_artifact("e1", "../secret"):
        pass
    assert seen == ["/v1/agent/execute"]


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_from_the_artifacts_endpoint_is_an_error_not_an_artifact(status):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, headers={"Location": "https://elsewhere.example/x"}, content=b"<html>moved</html>"
        )

    with pytest.raises(VlmRunError, match=f"unexpected HTTP {status}"), _client(handler).open_artifact("e1", "img_1"):
        pass


# -- logs ---------------------------------------------------------------------------------------


def test_debug_logging_of_the_whole_pipeline_leaks_no_key_secret_or_signature(stack, wire, emulator, clock):
    """DEBUG everywhere (botocore logs every response body), secrets read from Secrets Manager."""
    api_key = "vlmrun-api-key-0123456789abcdef"
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="vlmwatch/vlmrun-api-key", SecretString=api_key)
    secrets.create_secret(Name=SECRET_NAME, SecretString=NEW)
    emulator.config.api_key = api_key
    emulator.config.webhook_secret = NEW
    sqs = boto3.client("sqs")
    captured = sqs.create_queue(QueueName="captured-events")["QueueUrl"]
    events = boto3.client("events")
    events.put_rule(Name="all-vlmwatch", EventPattern=json.dumps({"source": [{"prefix": "vlmwatch"}]}))
    arn = sqs.get_queue_attributes(QueueUrl=captured, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule="all-vlmwatch", Targets=[{"Id": "q", "Arn": arn}])
    settings = wire(
        CALLBACK_URL="https://hooks.example/vlmwatch", WEBHOOK_SECRET=SECRET_NAME, POWERTOOLS_LOG_LEVEL="DEBUG"
    )
    wiring.use(
        settings=settings, transport=httpx.WSGITransport(app=emulator.app), clock=clock
    )  # no api_key override: the key is read from Secrets Manager, as in AWS
    local = LocalAws(stack)
    emulator._send = lambda url, body, headers: local.invoke(
        "webhook", function_url_event("POST", "/", headers, body, url.split("?", 1)[1])
    )
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        drop(stack, "invoice.txt", b"total 42")
        drop(stack, "unfetchable.pdf", b"%PDF-1.4 x")
        local.pump_ingest()
        for _ in range(6):
            clock.advance(600)
            emulator.tick()
            local.run_poller()
            local.pump_stream()
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)

    assert {j["outcome"] for j in jobs(stack)} == {"completed", "failed"}
    assert read_json(stack, result_key("invoice.txt"))["response"]
    logged = sink.getvalue()
    assert "GetSecretValue" in logged or "secretsmanager" in logged.lower()  # botocore was really at DEBUG
    s3 = boto3.client("s3")
    written = [
        s3.get_object(Bucket=stack.output_bucket, Key=key)["Body"].read().decode("utf-8", "replace")
        for key in stack.output_keys()
        if not key.endswith((".png", ".pdf"))
    ]
    emitted = [m["Body"] for m in sqs.receive_message(QueueUrl=captured, MaxNumberOfMessages=10).get("Messages", [])]
    assert emitted, "no event captured: the check below would prove nothing"
    for where, text in {
        "logs": logged,
        "outputs": "\n".join(written),
        "rows": json.dumps(jobs(stack), default=str),
        "events": "\n".join(emitted),
    }.items():
        assert api_key not in text, f"the API key is in the {where}"
        assert NEW not in text, f"the webhook secret is in the {where}"
        assert "X-Amz-Signature" not in text, f"a presigned URL's signature is in the {where}"
