"""What `vlmwatch query` costs over a 10,000-record results index (moto in-process; prints numbers).

Run: .venv/bin/python tests/benchmarks/results_index_query.py [records]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto import mock_aws

from vlmwatch.core.results_index import record_key, record_of, to_line
from vlmwatch_cli.results_query import CONSOLIDATED, run_query, sync_index

SQL = (
    "SELECT rule, count(*), sum(credits), "
    "sum(CAST(json_extract_scalar(response_json, '$.invoice.total') AS DOUBLE)) FROM results GROUP BY rule"
)


def document(i: int) -> dict:
    return {
        "schema": "vlmwatch.result/v1",
        "job_id": f"{i:040x}",
        "run": 1,
        "source": {"bucket": "in", "key": f"invoices/{i}.pdf", "version_id": "v", "etag": "e"},
        "ran": {"rule": ("invoices", "receipts", "photos")[i % 3], "model": "m", "config_version": 1},
        "execution": {"id": f"x{i}", "usage": {"credits_used": 1 + i % 4, "elements_processed": 2}},
        "response": {"invoice": {"total": 100 + i % 50, "currency": "EUR", "lines": [{"sku": "a", "qty": 1}]}},
        "timings": {"received_at": f"2026-03-{1 + i % 28:02d}T10:00:00+00:00", "queue_to_finish_seconds": 5},
    }


def main(records: int) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="out")
        size = 0
        for i in range(records):
            d = document(i)
            body = to_line(record_of(d, "s3://out/doc"))
            size += len(body)
            s3.put_object(Bucket="out", Key=record_key("results/", d["job_id"], d["timings"]["received_at"]), Body=body)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            t0 = time.perf_counter()
            first = sync_index(s3, "out", "results/", folder)
            t1 = time.perf_counter()
            again = sync_index(s3, "out", "results/", folder)
            t2 = time.perf_counter()
            rows = run_query(SQL, folder)[1]
            t3 = time.perf_counter()
            parquet = (folder / CONSOLIDATED).stat().st_size
            (folder / CONSOLIDATED).unlink()
            t4 = time.perf_counter()
            run_query(SQL, folder)
            t5 = time.perf_counter()
    print(f"records                        {records} ({size / records:.0f} bytes each as JSON Lines, {size} in all)")
    print(f"first sync                     {t1 - t0:.1f} s ({first.downloaded} downloaded, then consolidated)")
    print(f"sync with nothing new          {t2 - t1:.1f} s ({again.downloaded} downloaded)")
    print(f"query over the Parquet copy    {t3 - t2:.3f} s ({parquet} bytes) -> {rows}")
    print(f"same query over the JSON files {t5 - t4:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
