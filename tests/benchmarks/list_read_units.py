"""What `vlmwatch list` (and `status <key>`, `status <short id>`) read on a 10,000-row job table: the scan it
did before the ByKey/ByStatus indexes, and the queries it runs now; a short id before the ByIdPrefix index (a
walk of ByStatus) and with it; `list --status failed` with and without the ByOutcome index. A benchmark, not a
test (nothing is timed or asserted).

    .venv/bin/python tests/benchmarks/list_read_units.py [--rows 10000]

Read units: moto answers ``ReturnConsumedCapacity`` with a flat 1.0 per request whatever it read, so the
table also gives the units DynamoDB's pricing rules give for the items returned (``ReadMeter``: a scan or
query page costs its size in 4 KB steps, halved for eventually consistent reads; a BatchGetItem row its
own size in 4 KB steps). On AWS the ``CapacityUnits`` column is the real figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import boto3
from moto import mock_aws

from vlmwatch.adapters.dynamo import serialize_item
from vlmwatch.adapters.job_queries import JobQueries
from vlmwatch.adapters.jobstore import ID_PREFIX_FIELD, id_prefix
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch_cli import jobs
from vlmwatch_local.cloud.provision import provision

NOW = 1_900_000_000
# A realistic mix: most rows delivered, some failed or skipped, a few in flight.
MIX = [Status.DELIVERED] * 16 + [Status.SKIPPED] * 2 + [Status.FAILED, Status.RUNNING]
ROUTE = json.dumps({"rule": "invoices", "agent": "document.invoice:v1", "model": "vlm-1", "service_tier": "default"})
USAGE = json.dumps({"credits_used": 1, "elements_processed": 2, "duration_seconds": 12.5})


def row(i: int, bucket: str) -> dict[str, Any]:
    status = MIX[i % len(MIX)]
    key = f"invoices/2026/{i % 12 + 1:02d}/scan-{i:06d}.pdf"
    fields: dict[str, Any] = {
        "job_id": hashlib.sha256(str(i).encode()).hexdigest()[:40],
        "bucket": bucket,
        "key": key,
        "version_id": f"3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY{i:08d}",
        "etag": f"{i:032x}",
        "size": 180_000 + i,
        "content_type": "application/pdf",
        "route": ROUTE,
        "status": status,
        "attempts": 1,
        "poll_count": 3,
        "created_at": NOW + i,
        "updated_at": NOW + i + 30,
    }
    if status != Status.SKIPPED:
        fields.update(execution_id=f"a1b2c3d4-{i:04d}-4e5f-8a9b-{i:012d}", remote_status="completed", usage=USAGE)
        fields.update(submitted_at=NOW + i + 1, finished_at=NOW + i + 25, elements_processed=2)
    if status == Status.DELIVERED:
        fields.update(outcome="completed", delivered_at=NOW + i + 30)
        fields["result_uri"] = f"s3://vlmwatch-output/results/{key}.vlmwatch/versions/v{i}/result.json"
    elif status == Status.FAILED:
        fields.update(outcome="failed", error="VLM Run: the document could not be parsed (page 3 is empty)")
    elif status == Status.SKIPPED:
        fields.update(skip_reason="no rule matched and Prompt is empty")
    item = Job.from_item(fields).to_item() | {ID_PREFIX_FIELD: id_prefix(fields["job_id"])}  # as JobStore.create
    item.pop("credits_used", None)  # a float in the model; the pipeline writes it as a Decimal
    item["credits_used"] = 1
    return item


def measure(name: str, queries: JobQueries, run: Callable[[], Any]) -> None:
    result = run()
    meter = queries.meter
    shown = len(result) if isinstance(result, list) else int(result is not None)
    print(
        f"{name:<56} {shown:>6} {meter.requests:>8} {meter.items:>10} {meter.capacity_units:>14.1f} "
        f"{meter.estimated_units:>12.1f}"
    )


def walk_of_by_status(queries: JobQueries, prefix: str) -> list[str]:
    """The short-id lookup before ByIdPrefix: every ByStatus entry, one status at a time."""
    found: dict[str, None] = {}
    for status in Status:
        for entry in queries.iter_status(status):
            if entry.job_id.startswith(prefix):
                found[entry.job_id] = None
    return list(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with mock_aws():
        stack = provision(region="us-east-1")
        client = boto3.client("dynamodb")
        for start in range(0, args.rows, 25):
            items = [row(i, stack.input_bucket) for i in range(start, min(start + 25, args.rows))]
            client.batch_write_item(
                RequestItems={stack.table: [{"PutRequest": {"Item": serialize_item(i)}} for i in items]}
            )
        print(f"{args.rows:,} job rows; columns: rows shown, requests, items read, moto CapacityUnits, read units")
        print(f"{'':<56} {'shown':>6} {'requests':>8} {'items read':>10} {'moto units':>14} {'read units':>12}")

        def fresh() -> JobQueries:
            return JobQueries(client, stack.table)

        q = fresh()
        measure("before: list (scan, then --limit 200)", q, lambda: q.scan_all()[:200])
        q = fresh()
        measure("before: list --limit 10 (scan)", q, lambda: q.scan_all()[:10])
        q = fresh()
        measure("before: status <unknown key> (scan)", q, lambda: [j for j in q.scan_all() if j.key == "nope"])
        q = fresh()
        measure("after:  list (default --limit 200)", q, lambda: jobs.list_jobs(q, limit=200))
        q = fresh()
        measure("after:  list --limit 10", q, lambda: jobs.list_jobs(q, limit=10))
        q = fresh()
        q.__dict__["has_outcome_index"] = False  # as on a table without ByOutcome: failed rows, then delivered ones
        measure(
            "after:  list --status failed --limit 50 (no ByOutcome)",
            q,
            lambda: jobs.list_jobs(q, {Status.FAILED}, limit=50),
        )
        q = fresh()
        measure(
            "with ByOutcome: list --status failed --limit 50", q, lambda: jobs.list_jobs(q, {Status.FAILED}, limit=50)
        )
        q = fresh()
        measure("after:  list --status running (no --limit)", q, lambda: jobs.list_jobs(q, {Status.RUNNING}))
        q = fresh()
        key = "invoices/2026/05/scan-000100.pdf"
        measure("after:  status <key>", q, lambda: q.rows([e.job_id for e in q.for_key(key, limit=1)]))
        q = fresh()
        measure("after:  status <unknown key>", q, lambda: q.for_key("nope", limit=1))
        short = hashlib.sha256(b"4242").hexdigest()[:12]
        q = fresh()
        # What job_ids_with_prefix did before ByIdPrefix (and still does for rows written before it): every
        # ByStatus entry read. Read here without the FilterExpression (DynamoDB charges the entries a filter
        # drops as if returned; the meter can only size what comes back), the prefix kept client-side.
        measure("before: status <12-char id> (walk of ByStatus)", q, lambda: walk_of_by_status(q, short))
        q = fresh()
        measure("after:  status <12-char id> (ByIdPrefix)", q, lambda: q.job_ids_with_prefix(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
