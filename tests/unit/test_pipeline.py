"""The real handlers, driven with real event shapes, against moto and the VLM Run emulator."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest

from conftest import load_event, make_settings
from helpers import PDF_BYTES, Clock, drop, error_key, jobs, output_keys, read_json, result_key, with_bucket
from vlmwatch.core.lifecycle import Status
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws


def executions_started(emulator) -> int:
    return emulator.requests["POST /v1/agent/execute"]


def run_until_settled(local: LocalAws, clock: Clock, rounds: int = 20) -> None:
    """Turn every loop, moving time on so polls come due, until every job is delivered or skipped."""
    for _ in range(rounds):
        local.step()
        if jobs(local.stack) and all(j["status"] in ("delivered", "skipped") for j in jobs(local.stack)):
            return
        clock.advance(600)


@pytest.fixture
def clocked(stack, wire, clock):
    """The local stack with a clock the test controls (poll timing, deadlines)."""

    def _make(**env) -> tuple[LocalAws, Clock]:
        wire(**env)
        return LocalAws(stack), clock

    return _make


def test_dropped_file_starts_exactly_one_routed_execution(stack, wire, emulator):
    rules = [
        {"name": "invoices", "prefix": "invoices/", "suffixes": [".pdf"], "agent": "invoice-extractor:v2"},
        {
            "name": "notes",
            "suffixes": [".txt"],
            "prompt": "Summarise this note.",
            "json_schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
            "model": "vlmrun-orion-1:fast",
        },
    ]
    wire(ROUTING_RULES=rules)
    local = LocalAws(stack)
    drop(stack, "invoices/2026/inv-1.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "notes/todo.txt", b"buy milk\n")

    assert local.pump_ingest() == 2

    assert executions_started(emulator) == 2
    bodies = {
        e.request["inputs"]["file"].split("?")[0].rsplit("/", 1)[-1]: e.request for e in emulator.executions.values()
    }
    pdf, txt = bodies["inv-1.pdf"], bodies["todo.txt"]
    assert pdf["name"] == "invoice-extractor:v2" and "config" not in pdf
    assert txt["name"] is None
    assert txt["config"] == {
        "prompt": "Summarise this note.",
        "json_schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
    }
    assert txt["model"] == "vlmrun-orion-1:fast"
    for body in (pdf, txt):
        assert body["batch"] is True
        assert body["metadata"]["allow_training"] is False
        assert len(body["metadata"]["session_id"]) == 40  # the job id travels with the request
        # The docs' own form: a bare URL string, a presigned GET (not a public URL).
        assert "X-Amz-Signature" in body["inputs"]["file"]
    assert {j["status"] for j in jobs(stack)} == {"submitted"}


def test_same_event_twice_and_redelivered_batch_start_one_execution_each(stack, local, emulator):
    versions = [drop(stack, f"batch/file-{i}.txt", f"file {i}".encode()) for i in range(3)]
    sample = load_event("ingest-eventbridge-sqs.json")
    records = []
    for i, version in enumerate(versions):
        one = with_bucket(sample, stack.input_bucket, key=f"batch/file-{i}.txt", version=version)["Records"][0]
        one["messageId"] = f"m-{i}"
        records.append(one)
    batch = {"Records": records}

    first = local.invoke("ingest", batch)
    again = local.invoke("ingest", batch)  # the whole batch redelivered
    single = local.invoke("ingest", {"Records": [records[0]]})  # one event delivered a third time

    assert first == again == single == {"batchItemFailures": []}
    assert executions_started(emulator) == 3
    assert len(jobs(stack)) == 3


def test_event_shapes_direct_and_s3_via_sqs_are_accepted(stack, local, emulator):
    key = "invoices/march 2026+draft ü.pdf"
    version = drop(stack, key, PDF_BYTES, "application/pdf")
    via_sqs = with_bucket(load_event("ingest-s3-sqs.json"), stack.input_bucket, version=version)
    direct = with_bucket(load_event("ingest-s3-direct.json"), stack.input_bucket, version=version)

    assert local.invoke("ingest", via_sqs) == {"batchItemFailures": []}
    assert local.invoke("ingest", direct) == {"accepted": 1}

    assert executions_started(emulator) == 1  # the same object version, whatever the wiring
    (job,) = jobs(stack)
    assert job["key"] == key


@pytest.mark.parametrize("shape", ["eventbridge", "s3-notification"])
def test_key_with_spaces_plus_and_unicode_round_trips_to_output(stack, local, emulator, shape, clock):
    key = "docs/a b+c ü €.txt"
    if shape == "eventbridge":
        drop(stack, key, b"unicode keys work\n")  # S3 -> EventBridge -> SQS, through moto
    else:
        version = drop(stack, key, b"unicode keys work\n")
        local.invoke(
            "ingest",
            with_bucket(
                load_event("ingest-s3-sqs.json"),
                stack.input_bucket,
                key="docs/a+b%2Bc+%C3%BC+%E2%82%AC.txt",
                version=version,
            ),
        )
    run_until_settled(local, clock)

    keys = output_keys(stack)
    assert result_key(key) in keys
    document = read_json(stack, result_key(key))
    assert document["source"]["key"] == key
    assert document["response"]["file"]["text"] == "unicode keys work"


def test_completed_execution_delivers_artifacts_then_result_document(stack, local, emulator, clock):
    puts: list[str] = []
    wiring.s3().meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: puts.append(params["Key"])
    )
    drop(stack, "reports/q3.pdf", PDF_BYTES, "application/pdf")

    run_until_settled(local, clock)

    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "completed"
    version_folder = f"results/reports/q3.pdf.vlmwatch/versions/{job['version_id']}/"
    artifact_keys = [k for k in puts if k.startswith(version_folder + "artifacts/")]
    assert len(artifact_keys) == 2
    assert any(k.endswith(".png") and "/img_" in k for k in artifact_keys)
    assert any(k.endswith(".pdf") and "/doc_" in k for k in artifact_keys)
    documents = [k for k in puts if ".vlmwatch-index/" not in k]  # the index record follows the document
    assert documents[-1] == version_folder + "result.json"  # written last
    assert puts.index(version_folder + "result.json") > max(puts.index(k) for k in artifact_keys)
    assert job["result_uri"].endswith(version_folder + "result.json")

    document = read_json(stack, result_key("reports/q3.pdf"))  # the stable path holds the same document
    assert document == read_json(stack, version_folder + "result.json")
    assert document["schema"] == "vlmwatch.result/v1"
    assert document["source"]["bucket"] == stack.input_bucket
    assert document["source"]["content_type"] == "application/pdf"
    assert document["ran"]["agent"] == "doc-extractor:v1"
    assert document["execution"]["status"] == "completed"
    assert document["response"]["file"]["pages"] == 1
    assert sorted(a["object_id"][:4] for a in document["artifacts"]) == ["doc_", "img_"]
    s3 = boto3.client("s3")
    for artifact in document["artifacts"]:
        bucket, _, key = artifact["s3_uri"].removeprefix("s3://").partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(body) == artifact["bytes"]
    pdf_artifact = next(a for a in document["artifacts"] if a["object_id"].startswith("doc_"))
    assert (
        s3.get_object(Bucket=stack.output_bucket, Key=pdf_artifact["s3_uri"].split("/", 3)[3])["Body"].read()
        == PDF_BYTES
    )


def test_failed_execution_writes_error_document_with_vlmrun_message(stack, local, emulator, clock):
    drop(stack, "scans/broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf")

    run_until_settled(local, clock)

    assert result_key("scans/broken.pdf") not in output_keys(stack)
    error = read_json(stack, error_key("scans/broken.pdf"))
    assert error["schema"] == "vlmwatch.error/v1"
    assert error["status"] == "failed"
    assert "is not a readable PDF" in error["error"]["message"]
    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "failed"
    assert job["error_uri"].endswith(f"broken.pdf.vlmwatch/versions/{job['version_id']}/error.json")


def test_rate_limited_start_makes_work_wait_on_the_row_and_loses_nothing(stack, local, emulator, clock):
    emulator.config.first_429 = 1_000
    emulator.config.retry_after = 30  # longer than the client waits in-process
    for i in range(3):
        drop(stack, f"busy/{i}.txt", b"x")
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])[
        "Messages"
    ]
    from vlmwatch_local.cloud.loops import sqs_record

    event = {"Records": [sqs_record(m, stack.queue_arns["IngestQueue"], stack.region) for m in messages]}

    result = local.invoke("ingest", event)

    # The messages are done (no receive spent towards the DLQ): the rows hold the work, due after Retry-After.
    assert result == {"batchItemFailures": []}
    assert emulator.requests["429"] == 1  # the rest of the batch did not spend requests to hear it again
    assert emulator.executions == {}
    rows = jobs(stack)
    assert {j["status"] for j in rows} == {"received"}
    assert all(int(j["next_poll_at"]) >= clock.now + 30 for j in rows)
    assert "rate limited" in " ".join(str(j.get("error") or j.get("last_poll_error")) for j in rows)

    emulator.config.first_429 = 0
    clock.advance(60)
    run_until_settled(local, clock)
    assert len(emulator.executions) == 3
    assert {j["status"] for j in jobs(stack)} == {"delivered"}


def test_poller_backs_off_and_never_queries_finished_jobs(clocked, emulator, stack):
    emulator.config.status_sequence = ["pending"] * 6 + ["running", "completed"]
    local, clock = clocked(POLL_BASE_SECONDS="10", POLL_CAP_SECONDS="80")
    drop(stack, "slow.txt", b"slow")
    local.pump_ingest()
    gets = lambda: emulator.requests["GET /v1/agent/executions/<exec_id>"]  # noqa: E731

    local.run_poller()
    assert gets() == 0  # not due yet: no request spent

    gaps = []
    while jobs(stack)[0]["status"] not in ("completed", "delivered"):
        job = jobs(stack)[0]
        gaps.append(int(job["next_poll_at"]) - int(clock.now))
        clock.now = int(job["next_poll_at"])
        before = gets()
        local.run_poller()
        assert gets() == before + 1
    local.pump_stream()

    # First wait is the base; then each wait lies in [3/4 d, d] for d = half the job's age at VLM Run
    # (POLL_AGE_FACTOR), within [base, 80 s]: polls grow with the log of a job's duration.
    submitted = int(jobs(stack)[0]["submitted_at"])
    assert gaps[0] == 10
    age = 10
    for gap in gaps[1:]:
        d = min(80, max(10, age / 2))
        assert 0.75 * d - 1 <= gap <= d, (age, gap)
        age += gap
    assert age == int(jobs(stack)[0]["finished_at"]) - submitted
    assert max(gaps) <= 80
    polls = gets()
    for _ in range(3):
        clock.advance(10_000)
        assert local.run_poller()["due"] == 0
    assert gets() == polls  # finished jobs are not in the in-flight index
    assert jobs(stack)[0]["status"] == "delivered"


def test_next_poll_follows_the_jobs_age_not_its_poll_count(clocked, emulator, stack):
    """A job left unpolled for a while (an outage, a spent budget) is not polled from scratch again."""
    emulator.config.status_sequence = ["running"] * 10 + ["completed"]
    local, clock = clocked(POLL_BASE_SECONDS="10", POLL_CAP_SECONDS="300", JOB_DEADLINE_SECONDS="7200")
    drop(stack, "old.txt", b"old")
    local.pump_ingest()
    clock.advance(1200)  # nothing polled it for 20 minutes
    local.run_poller()
    job = jobs(stack)[0]
    assert int(job["poll_count"]) == 1
    # 20 minutes old: the next poll waits the cap (jittered), not the 20 s a second poll would by count.
    assert int(job["next_poll_at"]) - clock.now >= 0.75 * 300 - 1


def test_job_past_deadline_times_out_with_error_document(clocked, emulator, stack):
    local, clock = clocked(JOB_DEADLINE_SECONDS="120")
    drop(stack, "stuck-forever.txt", b"never finishes")
    local.pump_ingest()
    assert jobs(stack)[0]["status"] == "submitted"

    clock.advance(60)
    local.run_poller()
    assert jobs(stack)[0]["status"] == "running"
    clock.advance(120)
    local.run_poller()
    local.pump_stream()

    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "timed_out"
    error = read_json(stack, error_key("stuck-forever.txt"))
    assert error["status"] == "timed_out"
    assert "no final status from VLM Run within 120 s" in error["error"]["message"]


def test_out_of_order_status_never_moves_a_job_backwards(stack, local, emulator):
    drop(stack, "order.txt", b"order")
    local.pump_ingest()
    store, tracker = wiring.job_store(), wiring.tracker()
    job = store.get(jobs(stack)[0]["job_id"])
    from vlmwatch.adapters.vlmrun.models import Execution

    def execution(status: str) -> Execution:
        return Execution(id=job.execution_id, status=status)

    assert tracker.apply(job, execution("running")) == "changed"
    assert tracker.apply(job, execution("pending")) == "stale"
    assert store.get(job.job_id).status == Status.RUNNING
    assert tracker.apply(job, execution("completed")) == "finished"
    assert tracker.apply(job, execution("running")) == "stale"
    assert tracker.apply(job, execution("failed")) == "stale"
    final = store.get(job.job_id)
    assert final.status == Status.COMPLETED and final.error is None


def test_skipped_objects_are_recorded_with_a_reason(stack, wire, emulator):
    wire(ROUTING_RULES=[{"name": "tmp", "prefix": "tmp/", "skip": True, "reason": "scratch space"}])
    local = LocalAws(stack)
    drop(stack, "tmp/scratch.txt", b"ignore me")
    local.pump_ingest()
    (job,) = jobs(stack)
    assert job["status"] == "skipped" and job["skip_reason"] == "scratch space"
    assert executions_started(emulator) == 0


def test_metadata_overrides_the_agent_where_the_operator_allows_it(stack, wire, emulator):
    wire(ALLOWED_AGENTS="special-agent")  # opts the default route in, bounded to this agent
    local = LocalAws(stack)
    drop(stack, "any.txt", b"x", metadata={"vlmrun-agent": "special-agent:v9"})
    drop(stack, "other.txt", b"x", metadata={"vlmrun-agent": "someone-else:v1"})
    local.pump_ingest()
    (execution,) = emulator.executions.values()
    assert execution.request["name"] == "special-agent:v9"
    assert {j["status"] for j in jobs(stack)} == {"submitted", "skipped"}


def test_unknown_agent_fails_the_job_with_the_api_message(stack, wire, emulator, clock):
    wire(DEFAULT_AGENT_NAME="missing-agent:v1")
    local = LocalAws(stack)
    drop(stack, "x.txt", b"x")
    run_until_settled(local, clock)
    error = read_json(stack, error_key("x.txt"))
    assert "agent 'missing-agent:v1' not found" in error["error"]["message"]


def test_bad_routing_rules_fail_loudly_instead_of_skipping(stack, wire, emulator):
    from vlmwatch.core.errors import ConfigError
    from vlmwatch.core.settings import Settings

    env = stack.environment() | {"ROUTING_RULES": json.dumps([{"name": "x", "suffixes": [".pdf"]}])}
    with pytest.raises(ConfigError, match=r"ROUTING_RULES.*set exactly one of 'agent' and 'prompt'"):
        Settings.from_env(env)


def test_upload_mode_sends_the_bytes_through_the_files_api(stack, wire, emulator, clock, monkeypatch):
    import vlmwatch.flows.request

    settings = wire(INPUT_MODE="upload")
    # The presigned PUT goes only to VLM Run's own host (or known storage): the emulator stands in for it.
    emulator.config.public_url = settings.vlmrun_base_url
    local = LocalAws(stack)
    drop(stack, "up/small.txt", b"small file via POST /files")
    monkeypatch.setattr(vlmwatch.flows.request, "PRESIGNED_UPLOAD_THRESHOLD", 100)
    drop(stack, "up/large.txt", b"x" * 500)  # over the (lowered) threshold: presigned upload flow

    run_until_settled(local, clock)

    assert emulator.requests["POST /v1/files"] == 1
    assert emulator.requests["POST /v1/files/presigned-url"] == 1
    assert emulator.requests["PUT /_uploads/<file_id>"] == 1
    for execution in emulator.executions.values():
        file_input = execution.request["inputs"]["file"]
        assert file_input["type"] == "input_file" and "file_url" not in file_input
        assert file_input["file_id"] in emulator.uploads
    assert read_json(stack, result_key("up/small.txt"))["response"]["file"]["text"] == "small file via POST /files"
    assert read_json(stack, result_key("up/large.txt"))["response"]["file"]["size"] == 500


def test_wrong_api_key_keeps_the_job_waiting_and_a_rotated_key_is_picked_up(stack, emulator, clock):
    from vlmwatch_local.cloud.loops import sqs_record

    settings = make_settings(stack, DEFAULT_AGENT_NAME="doc-extractor:v1")
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name=settings.api_key_secret, SecretString="revoked-key")
    wiring.use(settings=settings, transport=httpx.WSGITransport(app=emulator.app), clock=clock)
    local = LocalAws(stack)
    drop(stack, "keyed.txt", b"x")
    messages = boto3.client("sqs").receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10)["Messages"]
    event = {"Records": [sqs_record(m, stack.queue_arns["IngestQueue"], stack.region) for m in messages]}

    result = local.invoke("ingest", event)

    assert result == {"batchItemFailures": []}  # the row holds the work: never failed as the file's fault
    (job,) = jobs(stack)
    assert job["status"] == "received" and "refused our credentials" in job["error"]

    secrets.put_secret_value(SecretId=settings.api_key_secret, SecretString=emulator.config.api_key)
    clock.advance(60)
    local.run_poller()  # the sweeper retries the deferred submit; the 401 re-reads the rotated key
    assert jobs(stack)[0]["status"] == "submitted"


def test_an_artifact_vlmrun_no_longer_has_is_reported_not_fatal(stack, local, emulator, clock):
    drop(stack, "gone.pdf", PDF_BYTES, "application/pdf")
    local.pump_ingest()
    (execution_id,) = emulator.executions
    doc_key = (execution_id, next(oid for eid, oid in emulator.artifacts if oid.startswith("doc_")))
    del emulator.artifacts[doc_key]  # expired on VLM Run's side

    run_until_settled(local, clock)

    document = read_json(stack, result_key("gone.pdf"))
    assert [a["object_id"][:4] for a in document["artifacts"]] == ["img_"]
    assert document["missing_artifacts"] == [
        {"object_id": doc_key[1], "error": document["missing_artifacts"][0]["error"]}
    ]
    # VLM Run's artifact list for the execution no longer has it: not even a download is spent on it.
    assert "artifact list does not have it" in document["missing_artifacts"][0]["error"]
    assert emulator.requests["GET /v1/artifacts"] == 1
    assert jobs(stack)[0]["status"] == "delivered"


def test_a_429_while_polling_defers_the_rest_of_the_run_without_more_requests(clocked, emulator, stack):
    local, clock = clocked(POLLER_CONCURRENCY="1")
    for i in range(5):
        drop(stack, f"many/{i}.txt", b"x")
    local.pump_ingest()
    clock.advance(60)
    emulator.config.first_429 = 10_000
    emulator.config.retry_after = 30
    before = emulator.requests["429"]

    summary = local.run_poller()

    assert summary["due"] == 5 and summary["rate_limited"] is True
    assert emulator.requests["429"] - before == 1  # one request learned the limit; four were not sent
    rows = jobs(stack)
    assert all(int(j["next_poll_at"]) >= clock.now + 30 for j in rows)  # every job waits out Retry-After
    assert {j["status"] for j in rows} == {"submitted"}
