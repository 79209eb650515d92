"""The `vlmwatch` CLI as an operator meets it (issue 18, issue 19 items 3 and 9), against moto.

Job rows are written as the pipeline writes them; every command runs through the real CLI (typer's
runner) and real boto3 calls. The end-to-end loop with the emulator is in test_cli.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from typer.testing import CliRunner

from vlmwatch.adapters.dynamo import serialize_item
from vlmwatch.adapters.job_queries import JobQueries
from vlmwatch.adapters.jobstore import ID_PREFIX_FIELD, ID_PREFIX_INDEX, STATUS_INDEX, id_prefix
from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED, Status
from vlmwatch_cli import jobs
from vlmwatch_cli.main import app
from vlmwatch_local.cloud.provision import StackResources

runner = CliRunner()
NOW = 1_900_000_000


def env_for(stack: StackResources, **extra: str) -> dict[str, str]:
    return {
        "VLMWATCH_STACK": "",
        "VLMWATCH_INPUT_BUCKET": stack.input_bucket,
        "VLMWATCH_OUTPUT_BUCKET": "",
        "VLMWATCH_TABLE": stack.table,
        "VLMWATCH_INGEST_QUEUE_URL": stack.ingest_queue_url,
        "VLMWATCH_DLQ_URL": stack.queues["IngestDLQ"],
        "VLMWATCH_FAILED_DELIVERIES_URL": stack.queues["FailedDeliveriesQueue"],
        "COLUMNS": "220",
        **extra,
    }


def cli(stack: StackResources, *args: str, input: str | None = None, **env: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env_for(stack, **env), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def put_job(
    stack: StackResources, key: str, status: Status, *, at: int = NOW, legacy: bool = False, **fields: Any
) -> Job:
    """A job row as the pipeline leaves it (status, outcome, timestamps, the ``id_prefix`` JobStore.create
    writes), written directly. ``legacy``: as written before the ``ByIdPrefix`` index (no ``id_prefix``)."""
    version = ObjectVersion.of(fields.pop("version_id", f"v-{key}-{at}"), None)
    job_id = fields.pop("job_id", None) or job_id_for(stack.input_bucket, key, version)
    row: dict[str, Any] = {
        "job_id": job_id,
        "bucket": stack.input_bucket,
        "key": key,
        "version_id": version.version_id,
        "status": status,
        "created_at": at,
        "updated_at": at,
        "attempts": 1,  # a job that failed or ran was submitted at least once
        # A finished job carries its outcome from the moment it finishes (JobStore.transition).
        **({"outcome": status} if status in FINISHED else {}),
        **fields,
    }
    job = Job.model_validate(row)
    item = job.to_item() | ({} if legacy else {ID_PREFIX_FIELD: id_prefix(job_id)})
    boto3.client("dynamodb").put_item(TableName=stack.table, Item=serialize_item(item))
    return job


# -- one way to name a job -----------------------------------------------------------------------


def test_status_takes_a_short_id_the_uri_submit_prints_a_version_and_an_execution_id(stack, tmp_path: Path):
    path = tmp_path / "named.txt"
    path.write_text("a job named four ways")
    code, out = cli(stack, "submit", str(path), "--prefix", "refs")
    assert code == 0, out
    uri = out.split()[1]
    assert uri == f"s3://{stack.input_bucket}/refs/named.txt"  # what submit prints...
    head = boto3.client("s3").head_object(Bucket=stack.input_bucket, Key="refs/named.txt")
    job = put_job(
        stack, "refs/named.txt", Status.RUNNING, version_id=head.get("VersionId"), execution_id="exec-1234-abcd"
    )
    assert job.job_id[:12] in out  # ...and the short id it shows

    for ref in (uri, job.job_id[:12], job.job_id[:6], "exec-1234-abcd", f"{uri}?versionId={job.version_id}"):
        code, shown = cli(stack, "status", ref, "--json")
        assert code == 0, (ref, shown)
        assert json.loads(shown)["job_id"] == job.job_id, ref

    assert cli(stack, "status", f"{uri}?versionId=not-a-version")[0] == 1


def test_an_ambiguous_prefix_is_an_error_that_lists_the_candidates(stack):
    a = put_job(stack, "amb/one.txt", Status.FAILED, job_id="abcd" + "1" * 36)
    b = put_job(stack, "amb/two.txt", Status.DELIVERED, job_id="abcd" + "2" * 36, outcome=Status.COMPLETED)

    code, out = cli(stack, "status", "abcd")

    assert code == 2
    assert "matches 2 jobs" in out and a.job_id[:12] in out and b.job_id[:12] in out and "amb/two.txt" in out
    assert "Traceback" not in out
    assert cli(stack, "retry", "abcd1")[0] == 0  # one more character is enough


class MovesDuringLookup:
    """Records the DynamoDB calls the CLI makes; right after the CLI first reads ``index`` (for ByStatus: its
    ``submitted`` entries), the pipeline moves the job from submitted to running (a poll landing between the
    lookup's requests)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stack: StackResources, job: Job, index: str) -> None:
        import botocore.client

        self.calls: list[tuple[str, str | None]] = []
        real = botocore.client.BaseClient._make_api_call
        moved = False

        def spy(client: Any, operation: str, params: dict[str, Any]) -> Any:
            nonlocal moved
            answer = real(client, operation, params)
            if client.meta.service_model.service_name != "dynamodb":
                return answer
            self.calls.append((operation, params.get("IndexName")))
            values = params.get("ExpressionAttributeValues", {})
            read = operation == "Query" and params.get("IndexName") == index
            if read and not moved and values.get(":s", {"S": "submitted"}) == {"S": "submitted"}:
                moved = True
                real(
                    client,
                    "UpdateItem",
                    {
                        "TableName": stack.table,
                        "Key": serialize_item({"job_id": job.job_id}),
                        "UpdateExpression": "SET #s = :r, updated_at = :u",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": serialize_item({":r": "running", ":u": NOW + 5}),
                    },
                )
            return answer

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)


@pytest.mark.parametrize("legacy", [False, True], ids=["indexed", "written-before-the-index"])
def test_a_job_that_moves_on_during_a_short_id_lookup_is_found_once(stack, monkeypatch, legacy):
    job = put_job(
        stack, "race/running.txt", Status.SUBMITTED, job_id="ab12cd34" + "e" * 32, execution_id="x-1", legacy=legacy
    )
    # Rows written before the index are found by walking ByStatus one status at a time: the job is read in
    # "submitted", then again in "running". Indexed rows are one entry of one query.
    spy = MovesDuringLookup(monkeypatch, stack, job, STATUS_INDEX if legacy else ID_PREFIX_INDEX)

    code, out = cli(stack, "retry", job.job_id[:8])

    assert code == 1 and "in flight (running): not retried" in out and "0 of 1" in out, out
    assert "matches" not in out  # never "matches 1 jobs" (exit 2)
    queries = [index for operation, index in spy.calls if operation == "Query"]
    assert ("Scan", None) not in spy.calls
    if legacy:  # the old rows: the index finds nothing, then the walk of ByStatus (once, de-duplicated)
        assert queries.count(ID_PREFIX_INDEX) == 1 and queries.count(STATUS_INDEX) == len(Status)
    else:  # one query of the id-prefix index answers it: no walk of ByStatus
        assert queries.count(ID_PREFIX_INDEX) == 1 and STATUS_INDEX not in queries


def test_a_short_id_costs_one_small_query_whatever_the_table_holds(stack):
    client = boto3.client("dynamodb")
    for start in range(0, 500, 25):
        batch = []
        for i in range(start, start + 25):
            job_id = f"{i:040x}"[::-1]  # spread over many id prefixes, as sha256 ids are
            row = Job(
                job_id=job_id,
                bucket=stack.input_bucket,
                key=f"bulk/{i}.txt",
                status=Status.DELIVERED,
                created_at=NOW + i,
                updated_at=NOW + i,
            ).to_item() | {ID_PREFIX_FIELD: id_prefix(job_id)}
            batch.append({"PutRequest": {"Item": serialize_item(row)}})
        client.batch_write_item(RequestItems={stack.table: batch})
    wanted = f"{321:040x}"[::-1]

    queries = JobQueries(client, stack.table)
    found = queries.job_ids_with_prefix(wanted[:8])

    assert found == [wanted]
    assert queries.meter.by_operation == {"query ByIdPrefix": 1} and queries.meter.requests == 1
    assert queries.meter.estimated_units == 0.5  # one eventually consistent read of a few index entries
    assert queries.job_ids_with_prefix("ffff") == []  # no match: the index, then the old rows' walk


def test_short_ids_work_on_a_table_still_without_the_id_prefix_index(stack):
    # A stack upgraded one index per deploy: until ByIdPrefix exists, short ids are found the old way.
    client = boto3.client("dynamodb")
    client.update_table(TableName=stack.table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": ID_PREFIX_INDEX}}])
    job = put_job(stack, "upgrade/old.txt", Status.FAILED, legacy=True)

    code, out = cli(stack, "status", job.job_id[:8], "--json")

    assert code == 0 and json.loads(out)["job_id"] == job.job_id, out


def test_retry_and_cancel_take_every_kind_of_reference(stack):
    failed = put_job(stack, "kinds/failed.txt", Status.FAILED, execution_id="exec-f", error="boom")
    running = put_job(stack, "kinds/running.txt", Status.RUNNING, execution_id="exec-r")

    code, out = cli(stack, "retry", f"s3://{stack.input_bucket}/kinds/failed.txt")
    assert code == 0 and "retried" in out, out
    code, out = cli(stack, "cancel", "exec-r")
    assert code == 0 and "cancelled" in out
    assert "execution exec-r was left alone" in out  # VLM Run has no execution cancel: said so
    row = JobQueries(boto3.client("dynamodb"), stack.table).get(running.job_id)
    assert row is not None and row.status == Status.FAILED and row.error == "cancelled by operator"
    assert row.next_poll_at is not None  # scheduled for delivery of its error document, like any failure
    again = JobQueries(boto3.client("dynamodb"), stack.table).get(failed.job_id)
    assert again is not None and again.status == Status.RECEIVED


# -- exit codes and validation ----------------------------------------------------------------------


def test_retry_of_a_completed_in_flight_or_unknown_job_exits_1(stack):
    done = put_job(stack, "exit/done.txt", Status.DELIVERED, outcome=Status.COMPLETED)
    flying = put_job(stack, "exit/flying.txt", Status.RUNNING, execution_id="e-1")

    for ref in (done.job_id, flying.job_id[:10], "exit/nothing-here.txt"):
        code, out = cli(stack, "retry", ref)
        assert code == 1, (ref, out)
        assert "0 of 1 job(s) reopened" in out
    code, out = cli(stack, "cancel", done.job_id)
    assert code == 1 and "already completed: nothing to cancel" in out


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--status", "bogus"),
        ("list", "--limit", "-1"),
        ("list", "--limit", "0"),
        ("submit", "x.txt", "--wait", "--timeout", "-1"),
        ("retry", "--status", "completed"),
        ("list", "--since", "yesterday-ish"),
        ("backfill", "s3://elsewhere/x", "--rate", "-1"),
    ],
)
def test_a_filter_or_limit_that_makes_no_sense_exits_2(stack, args):
    code, out = cli(stack, *args)
    assert code == 2, out
    assert "Traceback" not in out


def test_a_bad_status_names_the_real_ones(stack):
    code, out = cli(stack, "list", "--status", "failed,bogus")
    assert code == 2 and "'bogus'" in out and "timed_out" in out and "delivered" in out


# -- one error path ----------------------------------------------------------------------------------


def test_a_wrong_table_is_one_line_saying_what_to_check(stack):
    code, out = cli(stack, "list", VLMWATCH_TABLE="no-such-table")
    assert code == 2
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert "ResourceNotFoundException" in out and "check the name" in out and "region" in out

    code, out = cli(stack, "submit", __file__, VLMWATCH_INPUT_BUCKET="no-such-bucket-here")
    assert code == 2 and "Traceback" not in out and "NoSuchBucket" in out


@set_initial_no_auth_action_count(2)
@mock_aws
def test_access_denied_is_one_line_naming_the_permission_and_debug_shows_the_traceback(monkeypatch):
    iam = boto3.client("iam")
    iam.create_user(UserName="operator")
    key = iam.create_access_key(UserName="operator")["AccessKey"]  # a user with no policy at all
    env = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "VLMWATCH_TABLE": "jobs",
        "VLMWATCH_STACK": "",
    }

    result = runner.invoke(app, ["list"], env=env)

    assert result.exit_code == 2
    out = result.output
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    assert "AWS refused Query" in out and "not authorized to perform: dynamodb:Query" in out
    assert "allowed Query" in out and "profile" in out

    debug = runner.invoke(app, ["--debug", "list"], env=env)
    assert debug.exit_code != 0 and debug.exception is not None  # the traceback, for whoever asked


def test_a_missing_stack_env_file_or_unknown_stack_is_one_line(stack):
    code, out = cli(stack, "list", VLMWATCH_STACK="/nowhere/local.env")
    assert code == 2 and "no stack env file" in out and "make up" in out
    code, out = cli(stack, "list", VLMWATCH_STACK="vlmwatch-nope")
    assert code == 2 and "cannot read stack 'vlmwatch-nope'" in out and "Traceback" not in out


def test_a_stack_env_file_whose_local_stack_stopped_says_so(tmp_path: Path):
    env_file = tmp_path / "stopped.env"
    env_file.write_text(
        "export AWS_ENDPOINT_URL=http://127.0.0.1:9\nexport AWS_DEFAULT_REGION=us-east-1\n"
        "export AWS_ACCESS_KEY_ID=local\nexport AWS_SECRET_ACCESS_KEY=local\nexport VLMWATCH_TABLE=jobs\n"
    )
    result = runner.invoke(app, ["list"], env={"VLMWATCH_STACK": str(env_file), "VLMWATCH_TABLE": ""})
    assert result.exit_code == 2 and "is `make up` still running?" in result.output


# -- one variable names the deployment -------------------------------------------------------------


def test_one_stack_env_file_is_all_a_command_needs_and_no_output_bucket_is_asked_for(stack, tmp_path: Path):
    env_file = tmp_path / "local.env"
    env_file.write_text(
        "# written by make up\n"
        f"export AWS_DEFAULT_REGION={stack.region}\n"
        f"export VLMWATCH_INPUT_BUCKET={stack.input_bucket}\n"
        f"export VLMWATCH_TABLE={stack.table}\n"
        f"export VLMWATCH_INGEST_QUEUE_URL={stack.ingest_queue_url}\n"
        f"export VLMWATCH_DLQ_URL={stack.queues['IngestDLQ']}\n"
        f"export VLMWATCH_FAILED_DELIVERIES_URL='{stack.queues['FailedDeliveriesQueue']}'\n"
    )
    put_job(stack, "env/one.txt", Status.FAILED)
    only = {k: "" for k in env_for(stack) if k.startswith("VLMWATCH_") and k != "VLMWATCH_STACK"}

    code, out = cli(stack, "list", **only, VLMWATCH_STACK=str(env_file))
    assert code == 0 and "env/one.txt" in out, out
    code, out = cli(stack, "dlq", "list", **only, VLMWATCH_STACK=str(env_file))
    assert code == 0 and "0 message(s) in the ingest" in out
    code, out = cli(stack, "dlq", "list", "--queue", "deliveries", **only, VLMWATCH_STACK=str(env_file))
    assert code == 0 and "0 message(s) in the deliveries" in out

    code, out = cli(stack, "list", **only)
    assert code == 2 and "VLMWATCH_STACK" in out and "--table" in out and "output" not in out


# -- hostile text in keys and messages (issue 19 item 3) -------------------------------------------


def test_submit_of_a_key_with_markup_shows_it_as_text(stack, tmp_path: Path):
    (tmp_path / "]b.txt").write_text("a key that is not markup")

    code, out = cli(stack, "submit", str(tmp_path / "]b.txt"), "--prefix", "in/a[")

    assert code == 0, out
    assert f"uploaded s3://{stack.input_bucket}/in/a[/]b.txt" in out


def test_keys_and_messages_print_as_text_never_markup_or_control_sequences(stack):
    put_job(stack, "in/a[/]b.txt", Status.FAILED, error="VLM Run says [link=https://evil.example]click[/link]")
    spoof = put_job(stack, "[bold red]FAILED[/]", Status.DELIVERED, outcome=Status.COMPLETED, at=NOW + 1)
    put_job(stack, "esc/\x1b[2J\x1b]0;owned\x07\u202etxt.exe", Status.FAILED, error="\x9b31mred", at=NOW + 2)

    code, out = cli(stack, "list")

    assert code == 0, out
    assert "in/a[/]b.txt" in out and "[link=https://evil.example]click[/link]" in out
    assert "[bold red]FAILED[/]" in out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "esc/\\x1b[2J\\x1b]0;owned\\x07\\u202etxt.exe" in out  # shown, escaped, whole
    code, out = cli(stack, "status", spoof.job_id)
    assert code == 0 and "[bold red]FAILED[/]" in out
    code, out = cli(stack, "list", "--json")
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    keys = {json.loads(line)["key"] for line in out.splitlines()}
    assert "esc/\x1b[2J\x1b]0;owned\x07\u202etxt.exe" in keys  # JSON readers get the key exactly


# -- queries, not scans ------------------------------------------------------------------------------


def test_list_limit_10_reads_a_bounded_number_of_items_whatever_the_table_holds(stack):
    client = boto3.client("dynamodb")
    statuses = [Status.DELIVERED, Status.FAILED, Status.RUNNING, Status.SKIPPED, Status.RECEIVED]
    for start in range(0, 600, 25):
        batch = []
        for i in range(start, start + 25):
            job = Job(
                job_id=f"{i:040x}",
                bucket=stack.input_bucket,
                key=f"many/{i:05d}.txt",
                status=statuses[i % len(statuses)],
                outcome=statuses[i % len(statuses)] if statuses[i % len(statuses)] in FINISHED else None,
                created_at=NOW + i,
                updated_at=NOW + i,
            )
            batch.append({"PutRequest": {"Item": serialize_item(job.to_item())}})
        client.batch_write_item(RequestItems={stack.table: batch})

    queries = JobQueries(client, stack.table)
    shown = jobs.list_jobs(queries, limit=10)

    assert [j.key for j in shown] == [f"many/{i:05d}.txt" for i in range(599, 589, -1)]  # the newest 10
    # Index entries: at most 10 per status queried; rows: the 10 shown. Never the 600 a scan reads.
    assert queries.meter.by_operation["BatchGetItem"] == 10
    assert queries.meter.items <= 10 * len(Status) + 10
    failed = jobs.list_jobs(JobQueries(client, stack.table), {Status.FAILED}, limit=3)
    assert [j.key for j in failed] == ["many/00596.txt", "many/00591.txt", "many/00586.txt"]


def test_list_failed_also_lists_delivered_failures_and_since_filters_by_change(stack):
    put_job(stack, "out/delivered-failure.txt", Status.DELIVERED, outcome=Status.FAILED, at=NOW)
    put_job(stack, "out/delivered-ok.txt", Status.DELIVERED, outcome=Status.COMPLETED, at=NOW)
    put_job(stack, "out/failed-old.txt", Status.FAILED, at=1_000_000_000)

    code, out = cli(stack, "list", "--status", "failed", "--json")
    keys = {json.loads(line)["key"] for line in out.splitlines()}
    assert code == 0 and keys == {"out/delivered-failure.txt", "out/failed-old.txt"}
    code, out = cli(stack, "list", "--status", "failed", "--since", "2030-01-01", "--json")
    assert code == 0
    assert {json.loads(line)["key"] for line in out.splitlines()} == {"out/delivered-failure.txt"}


# -- guarded bulk verbs (issue 19 item 9) ------------------------------------------------------------


def test_retry_by_status_skips_permanent_failures_unless_asked_and_asks_before_many(stack):
    rejected = put_job(
        stack, "bulk/too-big.pdf", Status.FAILED, error="the input is 9,000,000 bytes, above the limit", attempts=1
    )
    gave_up = put_job(
        stack, "bulk/outage.pdf", Status.FAILED, error="could not start a VLM Run execution within 3600 s", attempts=3
    )
    for i in range(12):
        put_job(stack, f"bulk/run-{i:02d}.pdf", Status.DELIVERED, outcome=Status.FAILED, execution_id=f"x-{i}")
    queries = JobQueries(boto3.client("dynamodb"), stack.table)

    code, out = cli(stack, "retry", "--status", "failed", "--dry-run")
    assert code == 0 and "13 of 14 job(s) would be reopened (dry run)" in out, out
    assert "permanent failure" in out and "--include-permanent" in out
    assert all(j.status != Status.RECEIVED for j in queries.rows([rejected.job_id, gave_up.job_id]))

    code, out = cli(stack, "retry", "--status", "failed", input="n\n")
    assert code == 2 and "13 items" in out and "nothing done" in out
    assert queries.get(gave_up.job_id).status == Status.FAILED  # type: ignore[union-attr]

    code, out = cli(stack, "retry", "--status", "failed", "--limit", "2", "--yes")
    assert code == 0 and "2 of 3 job(s) reopened" in out, out  # 2 reopened, the permanent one left out
    code, out = cli(stack, "retry", "--status", "failed", "--include-permanent", "--yes")
    assert code == 0 and "12 of 12 job(s) reopened" in out, out
    assert queries.get(rejected.job_id).status == Status.RECEIVED  # type: ignore[union-attr]


def test_dlq_redrive_is_guarded_and_one_bad_message_can_be_dropped(stack):
    sqs = boto3.client("sqs")
    dlq = stack.queues["IngestDLQ"]
    ids = [sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": i}))["MessageId"] for i in range(12)]

    code, out = cli(stack, "dlq", "redrive", "--dry-run")
    assert code == 0 and "12 message(s), 0 job(s) would be redriven (dry run)" in out
    code, out = cli(stack, "dlq", "redrive", input="n\n")
    assert code == 2 and "nothing done" in out
    assert "12 message(s)" in cli(stack, "dlq", "list")[1]  # nothing moved, everything visible again

    code, out = cli(stack, "dlq", "drop", ids[0][:13])
    assert code == 0 and f"dropped {ids[0]}" in out
    assert cli(stack, "dlq", "drop", ids[0])[0] == 1  # gone for good
    code, out = cli(stack, "dlq", "redrive", "--limit", "3")
    assert code == 0 and "3 message(s) redriven" in out
    assert "8 message(s)" in cli(stack, "dlq", "list")[1]
    received = sqs.receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(received) == 3


# -- submit ------------------------------------------------------------------------------------------


def test_submit_refuses_two_files_that_would_share_a_key_before_uploading_anything(stack, tmp_path: Path):
    for folder in ("march", "april"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "n.txt").write_text(folder)
    (tmp_path / "first.txt").write_text("would go first")

    code, out = cli(
        stack, "submit", str(tmp_path / "first.txt"), str(tmp_path / "march/n.txt"), str(tmp_path / "april/n.txt")
    )

    assert code == 2 and "n.txt" in out and "nothing uploaded" in out
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=stack.input_bucket)


def test_submit_folders_keep_their_paths_under_one_slash_with_agent_and_metadata(stack, tmp_path: Path):
    for folder in ("march", "april"):
        (tmp_path / "inbox" / folder).mkdir(parents=True)
        (tmp_path / "inbox" / folder / "n.txt").write_text(folder)

    code, out = cli(
        stack, "submit", str(tmp_path / "inbox"), "--prefix", "invoices", "--agent", "receipts:v2",
        "--metadata", "team=finance",
    )  # fmt: skip

    assert code == 0, out
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=stack.input_bucket)["Contents"])
    assert keys == ["invoices/april/n.txt", "invoices/march/n.txt"]
    head = s3.head_object(Bucket=stack.input_bucket, Key="invoices/march/n.txt")
    assert head["Metadata"] == {"vlmrun-agent": "receipts:v2", "team": "finance"}
    assert cli(stack, "submit", str(tmp_path / "inbox"), "--agent", "not an agent!")[0] == 2
    assert cli(stack, "submit", str(tmp_path / "inbox"), "--metadata", "novalue")[0] == 2


def test_submit_streams_200_mb_in_parts_under_100_mb_of_memory(tmp_path: Path):
    """In a child process (the moto server, holding the object, stays out of the measure)."""
    from moto.server import ThreadedMotoServer

    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(200):
            f.write(block)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="big-input")
        child = (
            "import sys, tracemalloc\n"
            "from pathlib import Path\n"
            "import boto3\n"
            "from vlmwatch_cli import upload\n"
            "tracemalloc.start()\n"
            "planned = upload.plan([Path(sys.argv[1])], 'big')\n"
            "done = upload.upload(boto3.client('s3'), 'big-input', planned[0], {})\n"
            "peak = tracemalloc.get_traced_memory()[1]\n"
            # VmHWM: this process's peak resident set (getrusage would report the parent's, inherited at fork).
            "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024\n"
            "print(done.key, peak, hwm)\n"
        )
        import subprocess
        import sys

        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-c", child, str(big)], env=env, capture_output=True, text=True, timeout=600, check=True
        )
        key, peak, rss = result.stdout.split()
        head = boto3.client("s3", endpoint_url=endpoint).head_object(Bucket="big-input", Key=key)
    finally:
        server.stop()
    assert key == "big/big.bin" and head["ContentLength"] == 200 * 1024 * 1024
    assert "-" in head["ETag"]  # a multipart upload (ETag "<md5>-<parts>"), not one 200 MB PUT
    assert int(peak) < 100 * 1024 * 1024, f"peak {int(peak) / 2**20:.0f} MB traced"
    assert int(rss) < 150 * 1024 * 1024, f"peak RSS {int(rss) / 2**20:.0f} MB (interpreter and boto3 included)"


def _delivered(stack: StackResources, table: str, count: int, outcome: Status, start: int) -> None:
    client = boto3.client("dynamodb")
    for first in range(start, start + count, 25):
        batch = []
        for i in range(first, min(first + 25, start + count)):
            job = Job(
                job_id=f"{i:040x}",
                bucket=stack.input_bucket,
                key=f"d/{i:05d}.txt",
                status=Status.DELIVERED,
                outcome=outcome,
                created_at=NOW + i,
                updated_at=NOW + i,
            )
            batch.append({"PutRequest": {"Item": serialize_item(job.to_item())}})
        client.batch_write_item(RequestItems={table: batch})


def test_failures_delivered_or_not_are_one_query_where_the_table_has_a_by_outcome_index(stack):
    """With the ByOutcome index (template.yaml), only the failures are read, as rows or entries."""
    client = boto3.client("dynamodb")
    _delivered(stack, stack.table, 200, Status.COMPLETED, 0)
    _delivered(stack, stack.table, 3, Status.FAILED, 500)
    not_yet = Job(
        job_id=f"{900:040x}", bucket="b", key="d/waiting.txt", status=Status.FAILED, outcome=Status.FAILED,
        created_at=NOW, updated_at=NOW + 900,
    )  # fmt: skip
    client.put_item(TableName=stack.table, Item=serialize_item(not_yet.to_item()))

    queries = JobQueries(client, stack.table)
    found = jobs.list_jobs(queries, {Status.FAILED}, limit=10)

    assert [j.key for j in found] == ["d/waiting.txt", "d/00502.txt", "d/00501.txt", "d/00500.txt"]
    assert queries.meter.items == 8  # 4 index entries, 4 rows: the 200 completed ones never read


def test_with_a_keys_only_index_delivered_outcomes_are_looked_for_in_the_newest_rows_and_said_so(stack, monkeypatch):
    # A table deployed before the ByOutcome index: delivered failures are looked for in the newest rows.
    monkeypatch.setattr(JobQueries, "has_outcome_index", property(lambda self: False))
    monkeypatch.setattr(jobs, "OUTCOME_LOOKBACK", 150)
    _delivered(stack, stack.table, 1, Status.FAILED, 0)  # older than what is looked at
    _delivered(stack, stack.table, 200, Status.COMPLETED, 1)

    queries = JobQueries(boto3.client("dynamodb"), stack.table)
    notes: list[str] = []
    assert jobs.list_jobs(queries, {Status.FAILED}, limit=10, notes=notes) == []
    assert queries.meter.by_operation["BatchGetItem"] == 150
    assert notes and "newest 150" in notes[0] and "--since" in notes[0]
    code, out = cli(stack, "list", "--status", "failed", "--since", "2030-01-01")
    assert code == 0 and "d/00000.txt" in out and "1 job(s)" in out


def test_submit_wait_that_runs_out_of_time_exits_1_and_says_the_work_goes_on(stack, tmp_path: Path):
    (tmp_path / "slow.txt").write_text("no pipeline runs in this test: the job never appears")

    code, out = cli(stack, "submit", str(tmp_path / "slow.txt"), "--wait", "--timeout", "0")

    assert code == 1
    assert "slow.txt: still no job yet after 0 s (it goes on)" in out
