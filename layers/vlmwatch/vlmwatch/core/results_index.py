"""Results as a table: one flat record per delivered run, laid out for SQL engines. Pure: names and rows.

Layout (under the output prefix; ``dt`` is the UTC day the file was received: a job's record stays in
one partition however often it is delivered)::

    <prefix>.vlmwatch-index/results/dt=2026-12-02/<job_id>.json     one JSON Lines record

JSON Lines, one small object per run, not Parquet: a delivery writes one record on its own (Parquet pays
for itself only over many rows, so it would need a compaction job), Athena's JSON SerDe and DuckDB's
``read_json`` read it as is, and a record can be read by eye. One object per run (named by the job id)
also makes a replayed delivery overwrite its own record instead of adding a second row. The Glue table
over it (template.yaml, ``ResultsTable``) uses partition projection on ``dt``: no crawler, no
``MSCK REPAIR``. The response is kept as a JSON string (``response_json``): its shape differs per rule, and
``json_extract_scalar(response_json, '$.total')`` works in Athena and, through a macro, in
``vlmwatch query`` (DuckDB).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

INDEX_FOLDER = ".vlmwatch-index/"
TABLE = "results"

# Column -> Glue/Athena type, in record order (template.yaml declares the same; a test holds them equal).
COLUMNS: dict[str, str] = {
    "job_id": "string",
    "bucket": "string",
    "key": "string",
    "version_id": "string",
    "etag": "string",
    "run": "int",
    "status": "string",
    "rule": "string",
    "agent": "string",
    "model": "string",
    "service_tier": "string",
    "config_version": "int",
    "execution_id": "string",
    "credits": "double",
    "elements": "bigint",
    "received_at": "string",
    "submitted_at": "string",
    "finished_at": "string",
    "delivered_at": "string",
    "queue_to_finish_seconds": "bigint",
    "document_uri": "string",
    "error_message": "string",
    "response_json": "string",
}


def index_prefix(output_prefix: str) -> str:
    return f"{output_prefix}{INDEX_FOLDER}{TABLE}/"


def record_key(output_prefix: str, job_id: str, received_at: str) -> str:
    day = datetime.fromisoformat(received_at).astimezone(UTC).strftime("%Y-%m-%d")
    return f"{index_prefix(output_prefix)}dt={day}/{job_id}.json"


def _usage(document: dict[str, Any]) -> dict[str, Any]:
    usage = (document.get("execution") or {}).get("usage") or {}
    return usage if isinstance(usage, dict) else {}


def record_of(document: dict[str, Any], document_uri: str) -> dict[str, Any]:
    """The flat record of one result or error document (the index holds nothing the document does not)."""
    source, ran, timings = document["source"], document["ran"], document["timings"]
    execution = document.get("execution") or {}
    completed = document["schema"].startswith("vlmwatch.result/")
    usage = _usage(document)
    record = {
        "job_id": document["job_id"],
        "bucket": source["bucket"],
        "key": source["key"],
        "version_id": source.get("version_id"),
        "etag": source.get("etag"),
        "run": document.get("run", 1),
        "status": "completed" if completed else document.get("status"),
        "rule": ran.get("rule"),
        "agent": ran.get("agent"),
        "model": ran.get("model"),
        "service_tier": ran.get("service_tier"),
        "config_version": ran.get("config_version", 0),
        "execution_id": execution.get("id"),
        "credits": usage.get("credits_used"),
        "elements": usage.get("elements_processed"),
        "received_at": timings.get("received_at"),
        "submitted_at": timings.get("submitted_at"),
        "finished_at": timings.get("finished_at"),
        "delivered_at": timings.get("delivered_at"),
        "queue_to_finish_seconds": timings.get("queue_to_finish_seconds"),
        "document_uri": document_uri,
        "error_message": None if completed else (document.get("error") or {}).get("message"),
        "response_json": json.dumps(document.get("response") if completed else execution.get("response")),
    }
    return record


def to_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
