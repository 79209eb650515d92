"""The `vlmwatch` CLI against the local stack: the same commands an operator runs against AWS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from vlmwatch_cli.main import app
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig

pytestmark = pytest.mark.e2e
runner = CliRunner()


@contextmanager
def running_stack(agent: str = "doc-extractor:v1") -> Iterator[LocalStack]:
    """A local stack with its loops turning in the background, as AWS's would."""
    env = {
        **{
            "POLL_BASE_SECONDS": "1",
            "POLL_CAP_SECONDS": "1",
            "JOB_DEADLINE_SECONDS": "30",
            "SUBMIT_LEASE_SECONDS": "2",
        },
        **{"BREAKER_PROBE_SECONDS": "1", "BREAKER_RAMP_SECONDS": "2"},
    }
    stack = LocalStack(emulator_config=EmulatorConfig(step_seconds=0.3), env=env, parameters={"AgentName": agent})
    stack.start()
    stop = threading.Event()
    stack.paused = threading.Lock()  # type: ignore[attr-defined]  # held: the loops stand still

    def turn() -> None:
        while not stop.wait(0.2):
            with stack.paused:  # type: ignore[attr-defined]
                stack.aws.step()

    loop = threading.Thread(target=turn, daemon=True)
    loop.start()
    try:
        yield stack
    finally:
        stop.set()
        loop.join(timeout=30)
        stack.stop()


@pytest.fixture
def local() -> Iterator[LocalStack]:
    """Per test: the suite's autouse isolation resets the environment between tests."""
    with running_stack() as stack:
        yield stack


def cli(local: LocalStack, *args: str) -> tuple[int, str]:
    env = {
        "VLMWATCH_INPUT_BUCKET": local.stack.input_bucket,
        "VLMWATCH_OUTPUT_BUCKET": local.stack.output_bucket,
        "VLMWATCH_TABLE": local.stack.table,
        "VLMWATCH_INGEST_QUEUE_URL": local.stack.ingest_queue_url,
        "VLMWATCH_DLQ_URL": local.stack.queues["IngestDLQ"],
        "VLMWATCH_FAILED_DELIVERIES_URL": local.stack.queues["FailedDeliveriesQueue"],
        "COLUMNS": "200",
    }
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def executions(local: LocalStack) -> int:
    assert local.emulator is not None
    return len(local.emulator.executions)


def test_submit_wait_follows_a_file_to_its_result_document(local, tmp_path: Path):
    path = tmp_path / "invoice-march.txt"
    path.write_text("Invoice 42: total 99.50 EUR")

    code, out = cli(local, "submit", str(path), "--prefix", "cli/", "--wait", "--timeout", "60")

    assert code == 0, out
    assert f"uploaded s3://{local.stack.input_bucket}/cli/invoice-march.txt" in out
    assert "completed" in out
    assert f"document: s3://{local.stack.output_bucket}/results/cli/invoice-march.txt.vlmwatch/versions/" in out
    assert "Invoice 42: total 99.50 EUR" in out  # a short view of the response


def test_list_and_status_show_jobs_by_key_and_id(local, tmp_path: Path):
    path = tmp_path / "listed.txt"
    path.write_text("listed")
    assert cli(local, "submit", str(path), "--prefix", "list/", "--wait", "--timeout", "60")[0] == 0

    code, out = cli(local, "list", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    (row,) = [r for r in rows if r["key"] == "list/listed.txt"]
    assert row["status"] == "delivered" and row["outcome"] == "completed"

    code, out = cli(local, "status", "list/listed.txt")
    assert code == 0 and row["job_id"] in out and "completed" in out and "execution:" in out
    code, by_id = cli(local, "status", row["job_id"])
    assert code == 0 and "list/listed.txt" in by_id

    code, table = cli(local, "list", "--status", "completed", "--since", "1h")
    assert code == 0 and "list/listed.txt" in table
    assert cli(local, "status", "no/such/key.txt")[0] == 1


def test_retry_makes_one_new_execution_and_never_touches_a_job_in_flight(local, tmp_path: Path):
    assert local.emulator is not None
    local.emulator.config.failure_rate = 1.0  # VLM Run fails this one...
    path = tmp_path / "flaky.txt"
    path.write_text("works the second time")
    code, out = cli(local, "submit", str(path), "--prefix", "retry/", "--wait", "--timeout", "60")
    local.emulator.config.failure_rate = 0.0  # ...and would not any more
    assert code == 1 and "failed" in out
    job_id = json.loads(cli(local, "status", "retry/flaky.txt", "--json")[1])["job_id"]

    local.emulator.config.stuck_rate = 1.0  # a second file that stays running at VLM Run
    stuck = tmp_path / "running.txt"
    stuck.write_text("still going")
    cli(local, "submit", str(stuck), "--prefix", "retry/")
    running = json.loads(_wait_for(local, None, "in_flight", key="retry/running.txt"))
    local.emulator.config.stuck_rate = 0.0
    before = executions(local)

    code, out = cli(local, "retry", "--status", "failed")
    assert code == 0 and f"retried {job_id[:12]} retry/flaky.txt" in out
    code, out = cli(local, "retry", running["job_id"][:8])  # a short id, as `list` shows
    assert code == 1 and "in flight" in out and "0 of 1" in out

    final = json.loads(_wait_for(local, job_id, "delivered"))
    assert final["outcome"] == "completed"
    assert executions(local) == before + 1  # one new execution for the retried job, none for the running one
    assert len(final["previous_execution_ids"]) == 1 and final["retries"] == 1
    code, again = cli(local, "retry", "retry/flaky.txt")
    assert code == 1 and "completed: only failed or timed-out jobs" in again  # a success is not re-run


@pytest.mark.long(seconds=13)
def test_backfill_of_50_existing_objects_twice_makes_50_jobs(local):
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    with local.paused:  # "existing" objects: their events never reach this deployment
        for i in range(50):
            s3.put_object(Bucket=local.stack.input_bucket, Key=f"old/doc-{i:02d}.txt", Body=f"document {i}".encode())
        s3.put_object(Bucket=local.stack.input_bucket, Key="old/folder/", Body=b"")
        sqs.purge_queue(QueueUrl=local.stack.ingest_queue_url)

    code, dry = cli(local, "backfill", f"s3://{local.stack.input_bucket}/old/", "--dry-run")
    assert code == 0 and "51 object(s) listed: 0 enqueued" in dry and dry.count("would enqueue") == 50
    before = executions(local)
    code, first = cli(local, "backfill", f"s3://{local.stack.input_bucket}/old/")
    code2, _ = cli(local, "backfill", f"s3://{local.stack.input_bucket}/old/", "--rate", "100")
    assert code == code2 == 0 and "50 enqueued" in first

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # one read of the table a turn (50 `status` calls a turn took longer)
        jobs = [j for j in local.jobs() if j["key"].startswith("old/")]
        if len(jobs) >= 50 and all(j["status"] == "delivered" for j in jobs):
            break
        time.sleep(0.5)
    assert len(jobs) == 50 and all(j["outcome"] == "completed" for j in jobs)
    assert cli(local, "status", "old/doc-07.txt")[0] == 0
    assert executions(local) == before + 50  # the second run (events twice) started nothing more

    code, third = cli(local, "backfill", f"s3://{local.stack.input_bucket}/old/")
    assert "0 enqueued, 50 already processed, 1 folder marker(s) ignored" in third


def test_dlq_list_and_redrive(local):
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    with local.paused:
        put = s3.put_object(Bucket=local.stack.input_bucket, Key="dlq/late.txt", Body=b"was dead-lettered")
        sqs.purge_queue(QueueUrl=local.stack.ingest_queue_url)
    from vlmwatch.core.identity import ObjectVersion
    from vlmwatch_cli.ops import object_created

    event = object_created(local.stack.input_bucket, "dlq/late.txt", 17, ObjectVersion.from_response(put))
    sqs.send_message(QueueUrl=local.stack.queues["IngestDLQ"], MessageBody=json.dumps(event))

    code, listed = cli(local, "dlq", "list")
    assert code == 0 and "1 message(s) in the ingest dead-letter queue" in listed and "dlq/late.txt" in listed
    code, listed_again = cli(local, "dlq", "list")
    assert "1 message(s)" in listed_again  # listing takes nothing away

    code, out = cli(local, "dlq", "redrive")
    assert code == 0 and "1 message(s) redriven" in out
    assert json.loads(_wait_for(local, None, "delivered", key="dlq/late.txt"))["outcome"] == "completed"
    assert "0 message(s)" in cli(local, "dlq", "list")[1]

    sqs.send_message(QueueUrl=local.stack.queues["FailedDeliveriesQueue"], MessageBody='{"requestContext": {}}')
    code, out = cli(local, "dlq", "redrive", "--queue", "deliveries")
    assert code == 0 and "1 message(s) redriven from the deliveries" in out


def _wait_for(
    local: LocalStack, job_id: str | None, status: str, *, key: str | None = None, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ref = job_id or key
        assert ref is not None
        code, out = cli(local, "status", ref, "--json")
        # "in_flight": any status between submitted and finished.
        wanted = {"submitted", "enqueued", "pending", "running"} if status == "in_flight" else {status}
        if code == 0 and json.loads(out)["status"] in wanted:
            return out
        time.sleep(0.3)
    raise AssertionError(f"{job_id or key} not {status} after {timeout} s")


@pytest.mark.long(seconds=10)
def test_pause_holds_new_files_service_says_why_and_resume_lets_every_one_through(local, tmp_path: Path):
    before = executions(local)
    code, out = cli(local, "pause", "--reason", "plan change at 10:00")
    assert code == 0 and "open" in out and "paused" in out and "plan change at 10:00" in out
    time.sleep(2.5)  # every process reads the breaker's row at most every 2 s

    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(f"held {name}")
    assert cli(local, "submit", *(str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt")), "--prefix", "held/")[0] == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, out = cli(local, "service")
        if "3 received" in out:
            break
        time.sleep(0.3)
    assert "jobs waiting: 3 (3 received)" in out and "paused" in out
    time.sleep(1.5)  # the loops keep turning: still nothing reaches VLM Run
    assert executions(local) == before

    code, out = cli(local, "resume")
    assert code == 0 and "open" not in out.splitlines()[0]
    for key in ("held/a.txt", "held/b.txt", "held/c.txt"):
        assert json.loads(_wait_for(local, None, "delivered", key=key))["outcome"] == "completed"
    assert executions(local) == before + 3


def test_usage_says_what_the_work_cost_by_prefix(local, tmp_path: Path):
    for name in ("one.txt", "two.txt"):
        (tmp_path / name).write_text(f"usage {name}")
    code, out = cli(
        local, "submit", str(tmp_path / "one.txt"), str(tmp_path / "two.txt"), "--prefix", "costs/", "--wait"
    )
    assert code == 0, out
    code, out = cli(local, "usage", "--since", "1h", "--by", "prefix", "--json")
    assert code == 0, out
    rows = {row["group"]: row for row in (json.loads(line) for line in out.splitlines())}
    assert rows["costs/"]["files"] == 2 and rows["costs/"]["credits"] == 2 and rows["costs/"]["failures"] == 0
    code, table = cli(local, "usage", "--by", "agent")
    assert code == 0 and "doc-extractor:v1" in table and "total" in table
    assert cli(local, "usage", "--by", "colour")[0] == 2


def test_retry_by_status_leaves_out_a_job_vlm_run_rejected_unless_named_or_asked(tmp_path: Path):
    """VLM Run answers 404 for an unknown agent: a permanent failure, as the pipeline records it."""
    with running_stack(agent="missing-agent") as local:
        path = tmp_path / "never.txt"
        path.write_text("no such agent")
        code, out = cli(local, "submit", str(path), "--prefix", "perm", "--wait", "--timeout", "60")
        assert code == 1 and "failed" in out and "not found" in out, out
        job_id = json.loads(cli(local, "status", "perm/never.txt", "--json")[1])["job_id"]

        code, out = cli(local, "retry", "--status", "failed", "--dry-run")
        assert code == 0 and "permanent failure" in out and "0 of 1 job(s) would be reopened" in out, out
        code, out = cli(local, "retry", "--status", "failed", "--include-permanent", "--dry-run")
        assert "1 of 1 job(s) would be reopened" in out
        code, out = cli(local, "retry", job_id[:8])  # named: the operator chose it
        assert code == 0 and "1 of 1 job(s) reopened" in out
