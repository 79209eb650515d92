"""Hostile input (issue 19): a signed body replayed to another job's callback URL, metadata that asks for
work no rule allows, keys that decode to another object, replays and throttles that cost requests."""

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
from helpers import drop, error_key, jobs, read_json, result_key
from vlmwatch.core.redact import install_log_redaction, register_secret
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws, function_url_event
from vlmwatch_local.emulator import sign

SECRET_NAME = "vlmwatch/vlmrun-webhook-secret"
SECRET = "whsec-hostile-0123456789"


class LoseResponses(httpx.BaseTransport):
    """Forwards to the emulator, but the first POST /agent/execute of each listed file times out: after reaching
    VLM Run (the execution exists), or with ``arrives=False`` before (nothing is created). Either way the
    submitter cannot know which: an ambiguous submit. ``lost`` keeps each such request's body."""

    def __init__(self, app, names: set[str], *, arrives: bool = True) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._names = set(names)
        self._arrives = arrives
        self.lost: dict[str, dict] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute"):
            file_input = json.loads(request.content)["inputs"]["file"]
            name = (file_input if isinstance(file_input, str) else "").split("?")[0].rsplit("/", 1)[-1]
            if name in self._names:
                self._names.discard(name)
                self.lost[name] = json.loads(request.content)
                if self._arrives:
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


# -- 5. replays, 429s and Secrets Manager throttling at the webhook ------------------------------


def test_replays_of_an_applied_callback_are_answered_without_a_request(hooked, emulator, stack, clock):
    local, _ = hooked()
    emulator.config.status_sequence = ["enqueued", "running", "completed"]
    emulator.config.step_seconds = 10_000  # executions move when the test says, not on each GET
    drop(stack, "replayed.txt", b"x")
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    query = execution.request["callback_url"].split("?", 1)[1]
    assert jobs(stack)[0]["remote_status"] == "enqueued"

    enqueued = json.dumps(execution.to_json()).encode()  # what the row already says
    answers = [post(local, enqueued, query) for _ in range(20)]
    assert {json.loads(a["body"])["status"] for a in answers} == {"unchanged"}
    assert status_gets(emulator) == 0

    execution.step = 1  # it runs now: one callback is worth one re-fetch, its nineteen replays nothing
    running = json.dumps(execution.to_json()).encode()
    answers = [post(local, running, query) for _ in range(20)]
    assert {a["statusCode"] for a in answers} == {200}
    assert status_gets(emulator) == 1
    assert jobs(stack)[0]["status"] == "running"
    assert [post(local, enqueued, query)["statusCode"] for _ in range(5)] == [200] * 5  # an older one: nothing
    assert status_gets(emulator) == 1


class RateLimitedGets(httpx.BaseTransport):
    """The emulator, except that GET /agent/executions/{id} answers 429 while ``on``."""

    def __init__(self, app) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self.on = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.on and request.method == "GET" and "/agent/executions/" in request.url.path:
            return httpx.Response(429, headers={"Retry-After": "30"}, json={"detail": "rate limited"})
        return self._inner.handle_request(request)


def test_a_429_when_the_webhook_refetches_makes_the_job_wait_not_a_502(hooked, emulator, stack, clock):
    transport = RateLimitedGets(emulator.app)
    local, _ = hooked(transport)
    emulator.config.status_sequence = ["enqueued", "completed"]
    drop(stack, "limited.txt", b"rate limited at the webhook")
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    query = execution.request["callback_url"].split("?", 1)[1]
    execution.step = 1
    transport.on = True

    answer = post(local, json.dumps(execution.to_json()).encode(), query)

    assert answer["statusCode"] == 202 and json.loads(answer["body"]) == {"status": "deferred"}
    (job,) = jobs(stack)
    assert (
        job["status"] in ("submitted", "enqueued") and int(job["next_poll_at"]) <= clock() + 120
    )  # soon after Retry-After
    transport.on = False
    settle(local, clock)
    assert read_json(stack, result_key("limited.txt"))["response"]["file"]["text"] == "rate limited at the webhook"


class _Throttled:
    status_code = 400


def throttle_secrets(state: dict) -> list[int]:
    """Count every GetSecretValue; answer ThrottlingException while ``state["on"]``."""
    calls: list[int] = []

    def before_call(**_):
        calls.append(1)
        if state["on"]:
            error = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
            return _Throttled(), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    wiring._boto("secretsmanager").meta.events.register("before-call.secrets-manager.GetSecretValue", before_call)
    return calls


def test_a_secrets_manager_throttle_serves_the_last_good_secret_for_one_call(hooked, emulator, stack, clock):
    local, _ = hooked()
    state = {"on": False}
    calls = throttle_secrets(state)
    body = json.dumps({"id": "e-not-ours", "status": "completed"}).encode()
    assert post(local, body)["statusCode"] == 200  # read once, cached
    state["on"], before = True, len(calls)
    clock.advance(301)  # the cached value is stale: it would be read again

    forged = [post(local, body, secret="forged-0123456789")["statusCode"] for _ in range(20)]
    genuine = post(local, body)["statusCode"]

    assert forged == [401] * 20 and genuine == 200  # the last good secret still tells them apart
    assert len(calls) - before <= 2  # current and previous stage asked once each, not once per request


def test_a_throttle_with_no_good_secret_yet_is_a_503_for_one_call(hooked, emulator, stack, clock):
    local, _ = hooked()
    state = {"on": True}
    calls = throttle_secrets(state)
    body = json.dumps({"id": "e-not-ours", "status": "completed"}).encode()

    answers = [post(local, body, secret="forged-0123456789")["statusCode"] for _ in range(20)]

    assert answers == [503] * 20  # VLM Run retries a 5xx: nothing is lost
    assert len(calls) == 1


# -- 6. the size limit in url mode ----------------------------------------------------------------


def test_url_mode_never_presigns_an_input_above_max_object_bytes(stack, wire, emulator, clock):
    wire(MAX_OBJECT_BYTES="64")
    local = LocalAws(stack)
    drop(stack, "huge.txt", b"x" * 1000)

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["outcome"] == "failed" and "MaxObjectBytes" in job["error"]
    assert emulator.requests["POST /v1/agent/execute"] == 0  # no URL was ever sent
    document = read_json(stack, error_key("huge.txt"))
    assert "1,000 bytes, above the 64-byte limit (MaxObjectBytes)" in document["error"]["message"]


# -- 7. key decoding ------------------------------------------------------------------------------


def eventbridge_message(bucket: str, key: str, etag: str, version: str | None = None) -> dict:
    """An S3 → EventBridge → SQS message for ``key`` as delivered (the EventBridge form is not URL-encoded)."""
    event = load_event("ingest-eventbridge-sqs.json")
    record = event["Records"][0]
    body = json.loads(record["body"])
    body["detail"]["bucket"]["name"] = bucket
    body["detail"]["object"] = {"key": key, "size": 5, "etag": etag, **({"version-id": version} if version else {})}
    record["body"] = json.dumps(body)
    return event


def unversioned(stack) -> None:
    boto3.client("s3").put_bucket_versioning(Bucket=stack.input_bucket, VersioningConfiguration={"Status": "Suspended"})


def etag_of(stack, key: str) -> str:
    return boto3.client("s3").head_object(Bucket=stack.input_bucket, Key=key)["ETag"].strip('"')


def test_a_plus_key_in_an_unversioned_bucket_processes_the_uploaded_object(stack, wire, emulator, clock):
    wire()
    local = LocalAws(stack)
    unversioned(stack)
    drop(stack, "docs/a b.txt", b"the other file, with a space")
    drop(stack, "docs/a+b.txt", b"the uploaded file, with a plus")

    event = eventbridge_message(stack.input_bucket, "docs/a+b.txt", etag_of(stack, "docs/a+b.txt"))
    assert local.invoke("ingest", event) == {"batchItemFailures": []}

    (job,) = jobs(stack)
    assert job["key"] == "docs/a+b.txt"
    settle(local, clock)
    document = read_json(stack, result_key("docs/a+b.txt"))
    assert document["response"]["file"]["text"] == "the uploaded file, with a plus"


def test_an_encoded_reading_counts_only_if_its_etag_is_the_events(stack, wire, emulator, clock):
    # The same event, had EventBridge encoded the key: "docs/x+y.txt" meaning "docs/x y.txt". Both keys exist;
    # the ETag says which one was uploaded.
    wire()
    local = LocalAws(stack)
    unversioned(stack)
    drop(stack, "docs/x y.txt", b"uploaded: x space y")
    drop(stack, "docs/x+y.txt", b"another file: x plus y")

    event = eventbridge_message(stack.input_bucket, "docs/x+y.txt", etag_of(stack, "docs/x y.txt"))
    assert local.invoke("ingest", event) == {"batchItemFailures": []}

    (job,) = jobs(stack)
    assert job["key"] == "docs/x y.txt"


def test_an_object_changed_since_its_event_is_skipped_with_the_reason(stack, wire, emulator, clock):
    wire()
    local = LocalAws(stack)
    unversioned(stack)
    drop(stack, "docs/report.txt", b"first upload")
    first = etag_of(stack, "docs/report.txt")
    drop(stack, "docs/report.txt", b"second upload, replacing it")

    assert local.invoke("ingest", eventbridge_message(stack.input_bucket, "docs/report.txt", first)) == {
        "batchItemFailures": []
    }

    (job,) = jobs(stack)
    assert job["status"] == "skipped" and "changed since the event" in job["skip_reason"]
    assert job["etag"] == first  # the row is the event's version, on record
    assert emulator.requests["POST /v1/agent/execute"] == 0  # the second upload runs on its own event


# -- 8. keys that would nest in another file's outputs; InputPrefix / InputSuffix at ingest ----------


def test_a_key_inside_another_keys_output_folder_is_skipped_with_a_reason(stack, local, emulator):
    drop(stack, "a.pdf.vlmwatch/result.json", b'{"forged": true}')
    local.pump_ingest()
    (job,) = jobs(stack)
    assert job["status"] == "skipped" and ".vlmwatch/" in job["skip_reason"]
    assert emulator.requests["POST /v1/agent/execute"] == 0


def test_input_prefix_and_suffix_are_enforced_at_ingest_for_backfills_and_redrives(stack, wire, emulator):
    wire(INPUT_PREFIX="in/", INPUT_SUFFIX=".pdf")
    local = LocalAws(stack)
    for key in ("other/a.pdf", "in/a.txt", "in/a.pdf"):
        drop(stack, key, b"%PDF-1.4 not really")
    reads: list[str] = []
    wiring.s3().meta.events.register("before-call.s3.HeadObject", lambda params, **_: reads.append(params["url_path"]))

    for key in ("other/a.pdf", "in/a.txt", "in/a.pdf"):  # what a backfill of the whole bucket would send
        event = eventbridge_message(stack.input_bucket, key, etag_of(stack, key))
        assert local.invoke("ingest", event) == {"batchItemFailures": []}

    assert [j["key"] for j in jobs(stack)] == ["in/a.pdf"]
    assert len(reads) == 1  # the other keys were not even read


# -- 8. what is logged and what is kept on the row --------------------------------------------------

SIGNED = (
    "https://in.s3.amazonaws.com/a.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261125"
    "&X-Amz-Signature=0123456789abcdef0123456789abcdef"
)


def test_a_registered_secret_never_appears_in_a_log_line_extras_or_tracebacks():
    from aws_lambda_powertools import Logger

    secret = "sk-live-hostile-0123456789abcdef"
    register_secret(secret)
    install_log_redaction()
    stream = io.StringIO()
    structured = Logger(service="hostile-redaction", logger_handler=logging.StreamHandler(stream))
    plain = logging.getLogger("vlmwatch.tests.hostile")
    handler = logging.StreamHandler(stream)
    plain.addHandler(handler)
    try:
        structured.info("a dict extra", extra={"ctx": {"headers": {"Authorization": f"Bearer {secret}"}}})
        structured.info("a list extra", extra={"keys": [secret, {"deep": (secret,)}]})
        structured.info("an object extra", extra={"error": RuntimeError(f"bad key {secret}")})
        try:
            raise ValueError(f"VLM Run refused key {secret}") from KeyError(secret)
        except ValueError:
            structured.exception("a traceback (powertools)")
            plain.exception("a traceback (standard)")
        plain.error("a stack", stack_info=True, extra={"ctx": {"secret": secret}})
    finally:
        plain.removeHandler(handler)

    output = stream.getvalue()
    assert "a dict extra" in output and "a traceback (standard)" in output and "Traceback" in output
    assert secret not in output
    assert output.count("<redacted>") >= 6


def test_the_execution_kept_on_the_row_has_known_fields_only_and_no_signed_url():
    from vlmwatch.adapters.vlmrun.models import Execution

    execution = Execution.model_validate(
        {
            "id": "exec-1",
            "status": "completed",
            "created_at": "2026-11-25T12:00:00Z",
            "inputs": {"file": SIGNED},
            "config": {"prompt": "p"},
            "echoed_request": {"url": SIGNED},
            "response": {"source": SIGNED, "link": "https://example.com/catalog?page=2", "text": "ok"},
        }
    )
    stored = execution.model_dump_json()

    assert "X-Amz-Signature" not in stored and "X-Amz-Credential" not in stored
    kept = json.loads(stored)
    assert set(kept) <= {"id", "name", "status", "created_at", "completed_at", "response", "usage", "error"}
    assert kept["response"]["link"] == "https://example.com/catalog?page=2"  # extracted data is untouched
    assert kept["response"]["source"].startswith("https://in.s3.amazonaws.com/a.pdf?")
    assert Execution.model_validate_json(stored).response["text"] == "ok"
    assert execution.inputs == {"file": SIGNED}  # in memory, the echo is still evidence


def test_a_completed_job_row_never_holds_the_presigned_url_vlmrun_echoed(stack, local, emulator, clock):
    assert emulator.config.echo_inputs  # executions echo the presigned URL they were given
    drop(stack, "echoed.txt", b"echo me")
    local.pump_ingest()
    for _ in range(10):
        clock.advance(300)
        local.run_poller()
        if jobs(stack)[0]["status"] == "completed":
            break

    (job,) = jobs(stack)
    assert job["status"] == "completed" and job["execution_snapshot"]  # kept until delivered
    assert "X-Amz-Signature" not in json.dumps(job, default=str)
    assert "inputs" not in json.loads(job["execution_snapshot"])


class EchoMetadata(LoseResponses):
    """As :class:`LoseResponses`, and GET /agent/executions/{id} echoes the request's ``metadata``."""

    def __init__(self, app, names: set[str], emulator) -> None:
        super().__init__(app, names)
        self._emulator = emulator

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "GET" and "/agent/executions/" in request.url.path and response.status_code == 200:
            response.read()
            body = json.loads(response.content)
            body["metadata"] = self._emulator.executions[body["id"]].request["metadata"]
            return httpx.Response(200, json=body)
        return response


def test_an_execution_of_another_deployment_on_the_same_secret_is_never_adopted(hooked, emulator, stack, clock):
    # Another deployment (staging, say) shares the account and the signing secret, and runs the same agent at
    # the same moment: only the session it was sent with tells the executions apart.
    local, _ = hooked(EchoMetadata(emulator.app, {"a.txt"}, emulator))
    emulator.config.echo_inputs = False
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    (job,) = jobs(stack)
    ours = execution_of(emulator, job["job_id"])
    theirs_request = {**ours.request, "metadata": {**ours.request["metadata"], "session_id": "staging-job-1"}}
    theirs_request.pop("callback_url")
    theirs = emulator.create_execution(theirs_request, {})
    query = ours.request["callback_url"].split("?", 1)[1]

    answer = post(local, json.dumps(theirs.to_json()).encode(), query)

    assert json.loads(answer["body"]) == {"status": "refused"}
    assert jobs(stack)[0]["status"] == "received"
    assert json.loads(post(local, json.dumps(ours.to_json()).encode(), query)["body"])["status"] == "adopted"


def test_claim_windows_bound_each_attempt_and_any_attempt_for_an_echo():
    from vlmwatch.core.job import Job
    from vlmwatch.flows.evidence import CLOCK_SKEW_SECONDS as SKEW
    from vlmwatch.flows.evidence import claim_window

    job = Job(
        job_id="j", bucket="b", key="k", status="received", attempts=3, submit_started_at=1_500, created_at=1_000,
        updated_at=1_500,
    )  # fmt: skip
    assert claim_window(job, 3, now=2_000) == (1_500 - SKEW, 2_000 + SKEW)  # the current claim: since it began
    assert claim_window(job, 2, now=2_000) == (1_000 - SKEW, 1_500 + SKEW)  # an earlier one ended before it
    assert claim_window(job, None, now=2_000) == (1_000 - SKEW, 2_000 + SKEW)  # an echo of any attempt
