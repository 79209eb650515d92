"""The documents vlmwatch writes: a result (``vlmwatch.result/v1``) or an error (``vlmwatch.error/v1``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel

from vlmwatch.core.job import Job


class Execution(Protocol):
    """What a document takes from a VLM Run execution (``adapters.vlmrun.models.Execution`` has it)."""

    id: str
    name: str | None
    status: str
    created_at: datetime | None
    completed_at: datetime | None
    response: Any

    @property
    def usage(self) -> Any: ...


RESULT_SCHEMA = "vlmwatch.result/v1"
ERROR_SCHEMA = "vlmwatch.error/v1"


class ArtifactRecord(BaseModel):
    object_id: str
    s3_uri: str
    content_type: str
    bytes: int


def _iso(ts: int | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _source(job: Job) -> dict[str, Any]:
    return {
        "bucket": job.bucket,
        "key": job.key,
        "version_id": job.version_id,
        "etag": job.etag,
        "size": job.size,
        "content_type": job.content_type,
    }


def _ran(job: Job) -> dict[str, Any]:
    route = job.route
    return {
        "rule": route.rule if route else None,
        "agent": route.agent if route else None,
        "prompt": route.prompt if route else None,
        "json_schema": route.json_schema if route else None,
        "model": route.model if route else None,
        "service_tier": route.service_tier if route else None,
        "config_version": route.config_version if route else 0,
    }


def _timings(job: Job, now: int) -> dict[str, Any]:
    return {
        "received_at": _iso(job.created_at),
        "submitted_at": _iso(job.submitted_at),
        "finished_at": _iso(job.finished_at),
        "delivered_at": _iso(now),
        "queue_to_finish_seconds": (job.finished_at - job.created_at) if job.finished_at else None,
        "polls": job.poll_count,
        "submit_attempts": job.attempts,
    }


def result_document(
    job: Job, execution: Execution, artifacts: list[ArtifactRecord], now: int, missing: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "job_id": job.job_id,
        "run": job.run,
        "source": _source(job),
        "ran": _ran(job),
        "execution": {
            "id": execution.id,
            "name": execution.name,
            "status": execution.status,
            "created_at": execution.created_at.isoformat() if execution.created_at else None,
            "completed_at": execution.completed_at.isoformat() if execution.completed_at else None,
            "usage": execution.usage.model_dump(exclude_none=True) if execution.usage else None,
        },
        "response": execution.response,
        "artifacts": [a.model_dump() for a in artifacts],
        "missing_artifacts": missing,
        "orphan_executions": job.orphan_execution_ids,
        "timings": _timings(job, now),
    }


def error_document(
    job: Job, *, status: str, message: str, now: int, execution: Execution | None = None
) -> dict[str, Any]:
    return {
        "schema": ERROR_SCHEMA,
        "job_id": job.job_id,
        "run": job.run,
        "source": _source(job),
        "ran": _ran(job),
        "status": status,
        "error": {"message": message},
        "execution": {
            "id": job.execution_id,
            "remote_status": execution.status if execution else job.remote_status,
            "response": execution.response if execution else None,
        },
        "orphan_executions": job.orphan_execution_ids,
        "timings": _timings(job, now),
    }


def to_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False, default=str).encode()
