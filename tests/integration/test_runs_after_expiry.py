"""After a key's rows expire (ResultTtlDays) its documents stay: reprocess, backfill, compare and get read
them, and nothing is ever written over an earlier run's document. The TTL is simulated by deleting the
key's rows, as DynamoDB would."""

from __future__ import annotations

import datetime
import json
from email.utils import format_datetime

import boto3

from helpers import drop, jobs, output_keys, read_json, result_key, run_cli
from helpers import settle as settle_stack
from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.layout import OutputLayout
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.provision import StackResources

KEY = "expired/a.txt"


def cli(stack: StackResources, *args: str) -> tuple[int, str]:
    return run_cli(stack, *args)


def expire_rows(stack: StackResources, key: str) -> int:
    """What DynamoDB's TTL does to a key's rows once ResultTtlDays have passed."""
    client = boto3.client("dynamodb")
    gone = [j["job_id"] for j in jobs(stack) if j.get("key") == key]
    for job_id in gone:
        client.delete_item(TableName=stack.table, Key={"job_id": {"S": job_id}})
    return len(gone)


def raw(stack: StackResources, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=stack.output_bucket, Key=key)["Body"].read()


def index_records(stack: StackResources) -> dict[str, bytes]:
    return {k: raw(stack, k) for k in output_keys(stack) if ".vlmwatch-index/" in k}


def test_a_key_whose_rows_expired_is_reprocessed_beside_its_first_run_never_over_it(
    stack, local, wire, emulator, clock, tmp_path
):
    wire()
    version_id = drop(stack, KEY, b"processed long ago")
    settle_stack(local, clock)
    layout = OutputLayout(stack.output_bucket, "results/")
    version = ObjectVersion.of(version_id, None)
    run1_key = layout.result_key(KEY, version)
    run1 = raw(stack, run1_key)
    index_before = index_records(stack)
    assert json.loads(run1)["run"] == 1 and len(index_before) == 1
    assert expire_rows(stack, KEY) == 1

    # Backfill, as the old "no job for this key" advice said: the version's documents say it was processed.
    code, out = cli(stack, "backfill", f"s3://{stack.input_bucket}/expired/")
    assert code == 0 and "0 enqueued, 1 already" in out  # counted as processed: nothing sent
    settle_stack(local, clock, 4)
    assert jobs(stack) == [] and len(emulator.executions) == 1

    rules = tmp_path / "v1.json"
    rules.write_text(json.dumps({"default": {"agent": "doc-extractor:v2"}}))
    assert cli(stack, "config", "push", str(rules))[0] == 0
    code, out = cli(stack, "reprocess", KEY, "--dry-run")
    assert code == 0 and "1 file(s) to run again with v1; their last runs used 1 credits" in out
    code, out = cli(stack, "reprocess", KEY)
    assert code == 0 and "started 1 run(s)" in out
    clock.advance(61)
    settle_stack(local, clock)

    (row,) = jobs(stack)
    assert (row["status"], row["run"]) == ("delivered", 2)
    assert raw(stack, run1_key) == run1  # run 1's document, byte for byte
    run2 = read_json(stack, layout.result_key(KEY, version, 2))
    assert (run2["run"], run2["ran"]["config_version"], run2["response"]["agent"]) == (2, 1, "doc-extractor:v2")
    assert read_json(stack, result_key(KEY))["run"] == 2  # the stable path moved to the newest run
    index_after = index_records(stack)
    assert len(index_after) == 2 and all(index_after[k] == v for k, v in index_before.items())

    # Backfill again: a row (run 2) and run 1's documents: nothing starts.
    code, out = cli(stack, "backfill", f"s3://{stack.input_bucket}/expired/")
    assert code == 0 and "0 enqueued" in out

    # Compare and get, with run 1's row gone and then with every row gone: from the documents.
    for _ in range(2):
        code, out = cli(stack, "compare", "--prefix", "expired/", "--runs", "1", "2", "--json")
        report = json.loads(out)
        assert code == 0 and (report["files"], report["compared"]) == (1, 1), out
        assert report["fields"]["agent"]["differ"] == 1 and report["fields"]["file.sha256"]["agree"] == 1
        code, out = cli(stack, "get", KEY, "--run", "1", "--field", "agent")
        assert code == 0 and json.loads(out) == "doc-extractor:v1"
        code, out = cli(stack, "get", KEY, "--run", "2", "--field", "agent")
        assert code == 0 and json.loads(out) == "doc-extractor:v2"
        code, out = cli(stack, "get", KEY, "--version", str(version_id), "--run", "1", "--json")
        assert code == 0 and json.loads(out)["job_id"] == json.loads(run1)["job_id"]
        assert cli(stack, "get", KEY, "--field", "agent")[1].strip() == '"doc-extractor:v2"'  # the newest run
        assert cli(stack, "get", KEY, "--run", "3")[0] == 1
        assert cli(stack, "get", KEY, "--version", "no-such-version")[0] == 1
        expire_rows(stack, KEY)

    # A third run after every row expired: numbered above both runs written, beside them.
    rules.write_text(json.dumps({"default": {"agent": "doc-extractor:v3"}}))
    assert cli(stack, "config", "push", str(rules))[0] == 0
    code, out = cli(stack, "reprocess", KEY)
    assert code == 0 and "started 1 run(s)" in out
    clock.advance(61)
    settle_stack(local, clock)
    assert [(j["run"], j["status"]) for j in jobs(stack)] == [(3, "delivered")]
    assert raw(stack, run1_key) == run1
    assert read_json(stack, layout.result_key(KEY, version, 2))["response"]["agent"] == "doc-extractor:v2"
    assert read_json(stack, result_key(KEY))["run"] == 3
    code, out = cli(stack, "history", KEY, "--json")
    assert sorted(h["run"] for h in map(json.loads, out.splitlines())) == [1, 2, 3]


def test_an_event_replayed_after_the_row_expired_starts_nothing_over_the_written_run(
    stack, local, wire, emulator, clock
):
    from vlmwatch_cli.ops import object_created

    wire()
    version_id = drop(stack, KEY, b"processed long ago")
    settle_stack(local, clock)
    run1_key = OutputLayout(stack.output_bucket, "results/").result_key(KEY, ObjectVersion.of(version_id, None))
    run1, index_before = raw(stack, run1_key), index_records(stack)
    # ResultTtlDays (30) later DynamoDB has deleted the row; the upload's event is replayed (an EventBridge
    # archive, a late DLQ redrive). S3 says how old the object is: its HEAD's Date is 31 days after LastModified.
    clock.advance(31 * 86400)
    assert expire_rows(stack, KEY) == 1

    def s3_date(parsed, **_):
        modified = parsed.get("LastModified")
        if modified is not None:
            later = (modified + datetime.timedelta(days=31)).astimezone(datetime.UTC)
            parsed["ResponseMetadata"].setdefault("HTTPHeaders", {})["date"] = format_datetime(later, usegmt=True)

    wiring.s3().meta.events.register("after-call.s3.HeadObject", s3_date)
    etag = boto3.client("s3").head_object(Bucket=stack.input_bucket, Key=KEY)["ETag"]
    event = object_created(stack.input_bucket, KEY, 18, ObjectVersion.of(version_id, etag))
    boto3.client("sqs").send_message(QueueUrl=stack.ingest_queue_url, MessageBody=json.dumps(event))
    settle_stack(local, clock)

    assert raw(stack, run1_key) == run1 and index_records(stack) == index_before
    assert len(emulator.executions) == 1 and jobs(stack) == []
    waiting = boto3.client("sqs").get_queue_attributes(QueueUrl=stack.ingest_queue_url, AttributeNames=["All"])
    assert waiting["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"  # handled, not failing
