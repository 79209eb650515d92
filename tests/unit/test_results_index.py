"""Results as a table: the index records, the Glue table over them, and `vlmwatch query` (DuckDB)."""

from __future__ import annotations

import json

import boto3
import pytest

from vlmwatch.core.results_index import COLUMNS, record_key, record_of, to_line
from vlmwatch_cli.results_query import run_query, sync_index
from vlmwatch_local.cloud.provision import load_template


def _document(i: int, *, failed: bool = False) -> dict:
    base = {
        "job_id": f"job{i:03d}",
        "source": {"bucket": "in", "key": f"invoices/{i}.pdf", "version_id": f"v{i}", "etag": "e"},
        "ran": {"rule": "invoices" if i % 2 else "receipts", "agent": None, "model": "m", "config_version": 2},
        "timings": {
            "received_at": f"2026-03-{1 + i % 3:02d}T23:59:00+00:00",
            "delivered_at": f"2026-03-{2 + i % 3:02d}T00:01:00+00:00",
            "queue_to_finish_seconds": 7,
        },
    }
    if failed:
        return {
            **base,
            "schema": "vlmwatch.error/v1",
            "status": "failed",
            "error": {"message": "VLM Run could not read the file"},
            "execution": {"id": f"x{i}", "remote_status": "failed", "response": None},
        }
    return {
        **base,
        "schema": "vlmwatch.result/v1",
        "execution": {"id": f"x{i}", "usage": {"credits_used": 1.5 + i, "elements_processed": 2}},
        "response": {"invoice": {"total": 100 + i, "currency": "EUR"}},
    }


def test_the_glue_table_declares_the_columns_a_record_carries():
    table = load_template()["Resources"]["ResultsTable"]["Properties"]["TableInput"]
    declared = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert declared == COLUMNS
    assert list(record_of(_document(1), "s3://out/doc")) == list(COLUMNS)
    assert table["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert table["Parameters"]["projection.enabled"] == "true"  # partition projection: no crawler


def test_a_record_is_partitioned_by_the_day_its_file_was_received_and_named_by_its_job():
    key = record_key("results/", "abc", "2026-03-02T23:59:00+00:00")
    assert key == "results/.vlmwatch-index/results/dt=2026-03-02/abc.json"
    line = to_line(record_of(_document(3, failed=True), "s3://out/e"))
    record = json.loads(line)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert record["status"] == "failed" and record["error_message"] == "VLM Run could not read the file"


@pytest.fixture
def indexed(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="out")
    documents = [_document(i, failed=(i % 5 == 0)) for i in range(20)]
    for d in documents:
        key = record_key("results/", d["job_id"], d["timings"]["received_at"])
        s3.put_object(Bucket="out", Key=key, Body=to_line(record_of(d, f"s3://out/{d['job_id']}")))
    return s3, documents, tmp_path / "cache"


def test_query_totals_match_the_documents_the_index_was_built_from(indexed):
    s3, documents, cache = indexed
    synced = sync_index(s3, "out", "results/", cache)
    assert (synced.records, synced.downloaded) == (20, 20)

    columns, rows = run_query(
        "SELECT rule, count(*) AS files, sum(credits) AS credits, "
        "sum(CAST(json_extract_scalar(response_json, '$.invoice.total') AS DOUBLE)) AS total "
        "FROM results WHERE status = 'completed' GROUP BY rule ORDER BY rule",
        cache,
    )
    expected: dict[str, list[float]] = {}
    for d in documents:
        if d["schema"] == "vlmwatch.result/v1":
            row = expected.setdefault(d["ran"]["rule"], [0, 0.0, 0.0])
            row[0] += 1
            row[1] += d["execution"]["usage"]["credits_used"]
            row[2] += d["response"]["invoice"]["total"]
    assert columns == ["rule", "files", "credits", "total"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(k, *v) for k, v in sorted(expected.items())]

    _, by_day = run_query("SELECT dt, count(*) FROM results WHERE dt >= '2026-03-02' GROUP BY dt ORDER BY dt", cache)
    assert by_day == [("2026-03-02", 7), ("2026-03-03", 6)]


def test_sync_downloads_only_what_changed_and_drops_what_is_gone(indexed):
    s3, documents, cache = indexed
    sync_index(s3, "out", "results/", cache)
    gone = record_key("results/", documents[0]["job_id"], documents[0]["timings"]["received_at"])
    s3.delete_object(Bucket="out", Key=gone)
    again = sync_index(s3, "out", "results/", cache)
    assert (again.records, again.downloaded) == (19, 0)
    assert run_query("SELECT count(*) FROM results", cache)[1] == [(19,)]


def test_bad_sql_is_one_clear_error_and_an_empty_index_is_an_empty_table(tmp_path):
    with pytest.raises(ValueError, match="query failed"):
        run_query("SELECT nope FROM results", tmp_path)
    assert run_query("SELECT count(*) FROM results", tmp_path)[1] == [(0,)]
