"""The submit-exactly-once protocol under the faults that break it: crashes, ambiguous POSTs, unreadable
2xx bodies, early callbacks. Never a wrong document > never lost > never a duplicate execution."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest

from helpers import drop, jobs, read_json, result_key
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws, function_url_event, sqs_record


class SimulatedCrash(BaseException):
    """The process dies here (timeout, out of memory): nothing after this line runs, no except clause sees it."""

    simulated = True


class LoseResponses(httpx.BaseTransport):
    """Forwards to the emulator, but POST /agent/execute for the listed files 'times out'.

    ``reach`` says, per file name, whether the request got there first (the execution exists) or not.
    """

    def __init__(self, app, reach: dict[str, bool]) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._reach = dict(reach)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute"):
            body = json.loads(request.content)
            file_input = body["inputs"]["file"]
            name = (file_input if isinstance(file_input, str) else "").split("?")[0].rsplit("/", 1)[-1]
            if name in self._reach:
                reach = self._reach.pop(name)
                if reach:
                    self._inner.handle_request(request)
                raise httpx.ReadTimeout("read timed out", request=request)
        return self._inner.handle_request(request)


def settle(local: LocalAws, clock, rounds: int = 15) -> None:
    for _ in range(rounds):
        local.step()
        if jobs(local.stack) and all(j["status"] in ("delivered", "skipped") for j in jobs(local.stack)):
            return
        clock.advance(200)


def executions_for(emulator, job_id: str) -> list:
    return [e for e in emulator.executions.values() if e.request["metadata"].get("session_id") == job_id]


def test_a_crash_after_the_submit_claim_is_found_by_the_sweeper_and_lands_once(
    stack, local, emulator, clock, monkeypatch
):
    real_execute = VlmRunClient.execute

    def execute_then_die(self, body):
        real_execute(self, body)  # VLM Run created the execution...
        raise SimulatedCrash()  # ...and the process died before recording it

    monkeypatch.setattr(VlmRunClient, "execute", execute_then_die)
    drop(stack, "crash.txt", b"the submitter died after posting me")
    messages = boto3.client("sqs").receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10)["Messages"]
    event = {"Records": [sqs_record(m, stack.queue_arns["IngestQueue"], stack.region) for m in messages]}
    with pytest.raises(SimulatedCrash):
        local.invoke("ingest", event)
    monkeypatch.setattr(VlmRunClient, "execute", real_execute)
    assert local.invoke("ingest", event) == {"batchItemFailures": []}  # the redelivered message: a duplicate

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "completed"
    # Without evidence the first execution is not adopted: a second one ran, and the row says why.
    assert [int(a) for a in job["ambiguous_attempts"]] == [1]
    assert len(executions_for(emulator, job["job_id"])) == 2
    document = read_json(stack, result_key("crash.txt"))
    assert document["response"]["file"]["text"] == "the submitter died after posting me"


def test_two_ambiguous_submits_in_one_window_never_swap_results(stack, wire, emulator, clock):
    # a.txt's POST reached VLM Run and timed out; b.txt's timed out before it got there. VLM Run echoes
    # no inputs here: no evidence at all.
    emulator.config.echo_inputs = False
    wire(transport=LoseResponses(emulator.app, {"a.txt": True, "b.txt": False}))
    local = LocalAws(stack)
    drop(stack, "a.txt", b"alpha contents")
    drop(stack, "b.txt", b"bravo contents")

    settle(local, clock)

    for key, text in (("a.txt", "alpha contents"), ("b.txt", "bravo contents")):
        document = read_json(stack, result_key(key))
        assert document["response"]["file"]["text"] == text, key  # never the other file's extraction
    rows = {j["key"]: j for j in jobs(stack)}
    assert len(executions_for(emulator, rows["a.txt"]["job_id"])) == 2  # the unprovable one is an orphan...
    assert [int(a) for a in rows["a.txt"]["ambiguous_attempts"]] == [1]  # ...on record
    assert len(executions_for(emulator, rows["b.txt"]["job_id"])) == 1


@pytest.fixture
def hooked(stack, wire, emulator, clock):
    secret_name, secret = "vlmwatch/vlmrun-webhook-secret", "whsec-protocol"
    boto3.client("secretsmanager").create_secret(Name=secret_name, SecretString=secret)

    def _make(transport=None):
        wire(
            transport=transport,
            CALLBACK_URL="https://hooks.example/vlmwatch",
            WEBHOOK_SECRET=secret_name,
            EVIDENCE_WINDOW_SECONDS="900",
        )
        local = LocalAws(stack)
        responses: list[dict] = []

        def deliver(url: str, body: bytes, headers: dict[str, str]) -> None:
            query = url.split("?", 1)[1] if "?" in url else ""
            responses.append(local.invoke("webhook", function_url_event("POST", "/", headers, body, query)))

        emulator._send = deliver
        emulator.config.webhook_secret = secret
        return local, responses

    return _make


def test_with_webhooks_an_ambiguous_submit_is_adopted_on_the_signed_callback(hooked, emulator, stack, clock):
    local, responses = hooked(LoseResponses(emulator.app, {"a.txt": True}))
    emulator.config.status_sequence = ["running", "completed"]
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    (job,) = jobs(stack)
    assert job["status"] == "received" and [int(a) for a in job["ambiguous_attempts"]] == [1]

    (execution,) = emulator.executions.values()  # it moves on at VLM Run and calls back
    execution.step = 1
    emulator.tick()

    assert json.loads(responses[0]["body"])["status"] == "adopted"
    settle(local, clock)
    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["execution_id"] == execution.id
    assert len(emulator.executions) == 1  # evidence, so no second execution
    assert read_json(stack, result_key("a.txt"))["response"]["file"]["text"] == "alpha contents"


def test_a_callback_that_beats_the_post_response_is_applied_not_ignored(hooked, emulator, stack, clock):
    local, responses = hooked()
    emulator.config.status_sequence = ["completed"]  # done at once: the callback fires inside the POST
    drop(stack, "fast.txt", b"quick")

    local.pump_ingest()

    assert [json.loads(r["body"])["status"] for r in responses] == ["adopted"]
    (job,) = jobs(stack)
    assert job["status"] == "completed" and int(job["poll_count"]) == 0  # no wait for the safety-net poll
    assert "orphan_execution_ids" not in job
    local.pump_stream()
    assert jobs(stack)[0]["status"] == "delivered"


def test_a_forged_callback_url_adopts_nothing(hooked, emulator, stack, clock):
    local, _ = hooked(LoseResponses(emulator.app, {"a.txt": False}))
    drop(stack, "other.txt", b"someone else's file")
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    rows = {j["key"]: j for j in jobs(stack)}
    other = emulator.executions[rows["other.txt"]["execution_id"]]
    body = json.dumps(other.to_json()).encode()
    from vlmwatch_local.emulator import sign

    forged = f"job_id={rows['a.txt']['job_id']}&attempt=1&token={'0' * 32}"
    headers = {"X-VLMRun-Signature": sign("whsec-protocol", body), "Content-Type": "application/json"}
    response = local.invoke("webhook", function_url_event("POST", "/", headers, body, forged))

    assert response["statusCode"] == 200
    assert jobs(stack)[[j["key"] for j in jobs(stack)].index("a.txt")]["status"] == "received"  # not adopted


class Rewrite2xx(httpx.BaseTransport):
    """The POST is served, but its 2xx body is altered: an unknown status, or no readable body at all."""

    def __init__(self, app, mode: str) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._mode = mode

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if not request.url.path.endswith("/agent/execute") or response.status_code != 200:
            return response
        response.read()
        if self._mode == "unknown-status":
            body = json.loads(response.content) | {"status": "warming_up"}
            return httpx.Response(200, json=body)
        return httpx.Response(200, content=b"<html>gateway</html>")


@pytest.mark.parametrize("mode", ["unknown-status", "garbage"])
def test_a_2xx_it_cannot_parse_is_never_posted_again(stack, wire, emulator, clock, mode):
    wire(transport=Rewrite2xx(emulator.app, mode))
    local = LocalAws(stack)
    drop(stack, "odd.txt", b"odd")
    messages = boto3.client("sqs").receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10)["Messages"]
    event = {"Records": [sqs_record(m, stack.queue_arns["IngestQueue"], stack.region) for m in messages]}

    for _ in range(3):  # the same message, redelivered
        assert local.invoke("ingest", event) == {"batchItemFailures": []}

    assert emulator.requests["POST /v1/agent/execute"] == 1
    (job,) = jobs(stack)
    if mode == "unknown-status":
        assert job["status"] == "submitted" and job["execution_id"] in emulator.executions
        settle(local, clock)
        assert jobs(stack)[0]["outcome"] == "completed"
    else:
        assert job["status"] == "received" and "cannot read" in job["error"]


class ExecuteRateLimited(httpx.BaseTransport):
    """The first ``n`` POST /agent/execute get a 429 with a long Retry-After; everything else is served."""

    def __init__(self, app, n: int) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self.left = n

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute") and self.left:
            self.left -= 1
            return httpx.Response(429, headers={"Retry-After": "30"}, json={"detail": "slow down"})
        return self._inner.handle_request(request)


def test_upload_mode_uploads_once_across_submit_attempts(stack, wire, emulator, clock):
    wire(transport=ExecuteRateLimited(emulator.app, 3), INPUT_MODE="upload")
    local = LocalAws(stack)
    drop(stack, "up.txt", b"uploaded once")

    settle(local, clock)

    assert jobs(stack)[0]["outcome"] == "completed"
    assert int(jobs(stack)[0]["attempts"]) == 4  # three rate-limited submits, then one that ran
    assert emulator.requests["POST /v1/files"] == 1  # one copy of the file at VLM Run, reused by each attempt


def test_empty_objects_and_folder_markers_are_skipped_with_a_reason(stack, local, emulator):
    drop(stack, "folder/", b"")
    drop(stack, "empty.txt", b"")
    local.pump_ingest()
    reasons = {j["key"]: j["skip_reason"] for j in jobs(stack)}
    assert {j["status"] for j in jobs(stack)} == {"skipped"}
    assert "folder marker" in reasons["folder/"] and "0 bytes" in reasons["empty.txt"]
    assert emulator.requests["POST /v1/agent/execute"] == 0


def test_head_403_falls_back_to_the_raw_key_and_says_what_403_means(stack, local, emulator, monkeypatch):
    from botocore.exceptions import ClientError

    from conftest import load_event
    from helpers import with_bucket

    key = "docs/a+b.txt"  # the raw key really has a '+'; decoded it would be "a b.txt", which does not exist
    version = drop(stack, key, b"plus in the key")
    s3 = wiring.s3()
    real_head = s3.head_object

    def head(**params):
        if params["Key"] != key:  # AWS without s3:ListBucket: a missing key is 403, not 404
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        return real_head(**params)

    monkeypatch.setattr(s3, "head_object", head)
    event = with_bucket(load_event("ingest-s3-sqs.json"), stack.input_bucket, key="docs/a+b.txt", version=version)
    assert local.invoke("ingest", event) == {"batchItemFailures": []}
    (job,) = jobs(stack)
    assert job["key"] == key and job["status"] == "submitted"

    gone = with_bucket(load_event("ingest-s3-sqs.json"), stack.input_bucket, key="nothing+here.txt", version=version)
    result = local.invoke("ingest", gone)
    assert len(result["batchItemFailures"]) == 1  # retried and, in the end, dead-lettered with the reason


def test_ingest_role_can_tell_a_missing_object_from_a_forbidden_one():
    from vlmwatch_local.cloud.provision import load_template

    role = load_template()["Resources"]["IngestRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert any(s.get("Action") == "s3:ListBucket" for s in statements if isinstance(s, dict))


def test_stepfunctions_mode_sweeps_a_job_whose_state_machine_never_ran(stack, wire, emulator, clock):
    wire(
        STATE_MACHINE_ARN="arn:aws:states:us-east-1:123456789012:stateMachine:gone",
        POLLING_MODE="stepfunctions",
        SWEEP_OVERDUE_SECONDS="300",
    )
    local = LocalAws(stack)
    drop(stack, "untracked.txt", b"nobody polls me")
    local.pump_ingest()  # StartExecution fails: recorded in the log, not fatal
    (job,) = jobs(stack)
    assert job["status"] == "submitted"

    clock.advance(100)
    assert local.run_poller()["due"] == 0  # a live state machine would be polling it: the sweeper waits
    clock.advance(300)
    assert local.run_poller()["polled"] == 1  # overdue: its state machine is gone, the sweeper takes over
    settle(local, clock)
    assert jobs(stack)[0]["status"] == "delivered"
    assert read_json(stack, result_key("untracked.txt"))["response"]["file"]["text"] == "nobody polls me"


def test_an_ambiguous_submit_is_adopted_by_its_echoed_input_instead_of_run_twice(stack, wire, emulator, clock):
    # a.txt's POST reached VLM Run and timed out; b.txt's never got there. No webhooks: no callback.
    assert emulator.config.echo_inputs  # executions echo their inputs, as the agent-execution docs show
    wire(transport=LoseResponses(emulator.app, {"a.txt": True, "b.txt": False}))
    local = LocalAws(stack)
    drop(stack, "a.txt", b"alpha contents")
    drop(stack, "b.txt", b"bravo contents")

    settle(local, clock)

    rows = {j["key"]: j for j in jobs(stack)}
    for key, text in (("a.txt", "alpha contents"), ("b.txt", "bravo contents")):
        assert read_json(stack, result_key(key))["response"]["file"]["text"] == text, key
    # The execution a.txt's first attempt made carries the exact URL that attempt sent: adopted, not re-run.
    (only,) = executions_for(emulator, rows["a.txt"]["job_id"])
    assert rows["a.txt"]["execution_id"] == only.id and not rows["a.txt"].get("orphan_execution_ids")
    assert [int(a) for a in rows["a.txt"]["ambiguous_attempts"]] == [1]  # still on record as ambiguous
    # b.txt's attempt made nothing, so nothing echoes it: it was submitted again, once.
    assert len(executions_for(emulator, rows["b.txt"]["job_id"])) == 1
