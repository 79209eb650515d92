"""The output writer: artifacts first, the result document last, an error document on failure.

Layout (``prefix`` is configurable)::

    <prefix><input key>.json                       result document (vlmwatch.result/v1)
    <prefix><input key>.artifacts/<object_id>.<ext> one file per artifact
    <prefix><input key>.error.json                 error document (vlmwatch.error/v1)

The result document is written last so a consumer that reacts to ``*.json`` always finds the
artifacts already in place.
"""

from __future__ import annotations

import json
import mimetypes
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from vlmwatch.jobs import Job

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.vlmrun import Artifact, Execution

RESULT_SCHEMA = "vlmwatch.result/v1"
ERROR_SCHEMA = "vlmwatch.error/v1"
ARTIFACT_REF = re.compile(r"^(img|vid|aud|doc|recon|arr|url)_[0-9a-f]{6}$")
_EXT_BY_KIND = {"vid": "mp4", "aud": "mp3", "doc": "pdf", "recon": "spz", "arr": "npy", "url": "url.txt", "img": "jpg"}
_EXT_BY_TYPE = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "application/json": "json",
    "text/plain": "txt",
}


def artifact_refs(response: Any) -> list[str]:
    """Every artifact object id referenced anywhere in an execution response, in first-seen order."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if ARTIFACT_REF.match(node):
                found.setdefault(node, None)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(response)
    return list(found)


def artifact_extension(object_id: str, content_type: str) -> str:
    kind = object_id.split("_", 1)[0]
    if kind == "url":
        return _EXT_BY_KIND["url"]
    return (
        _EXT_BY_TYPE.get(content_type)
        or (mimetypes.guess_extension(content_type) or "").lstrip(".")
        or _EXT_BY_KIND.get(kind, "bin")
    )


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


class OutputWriter:
    """Writes a job's outputs to the output bucket.

    Args:
        s3: a boto3 S3 client.
        bucket: the output bucket.
        prefix: prepended to every key ("" or ending in "/").
    """

    def __init__(self, s3: S3Client, bucket: str, prefix: str = "") -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def result_key(self, input_key: str) -> str:
        return f"{self.prefix}{input_key}.json"

    def error_key(self, input_key: str) -> str:
        return f"{self.prefix}{input_key}.error.json"

    def artifact_key(self, input_key: str, object_id: str, content_type: str) -> str:
        return f"{self.prefix}{input_key}.artifacts/{object_id}.{artifact_extension(object_id, content_type)}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_artifact(self, job: Job, artifact: Artifact) -> ArtifactRecord:
        key = self.artifact_key(job.key, artifact.object_id, artifact.content_type)
        self._put(key, artifact.content, artifact.content_type, job)
        return ArtifactRecord(
            object_id=artifact.object_id,
            s3_uri=self.uri(key),
            content_type=artifact.content_type,
            bytes=len(artifact.content),
        )

    def put_result(
        self,
        job: Job,
        execution: Execution,
        artifacts: list[ArtifactRecord],
        now: int,
        *,
        missing: list[dict[str, str]] | None = None,
    ) -> str:
        document = {
            "schema": RESULT_SCHEMA,
            "job_id": job.job_id,
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
            "missing_artifacts": missing or [],
            "timings": _timings(job, now),
        }
        key = self.result_key(job.key)
        self._put(key, _json(document), "application/json", job)
        return self.uri(key)

    def put_error(self, job: Job, *, status: str, message: str, now: int, execution: Execution | None = None) -> str:
        document = {
            "schema": ERROR_SCHEMA,
            "job_id": job.job_id,
            "source": _source(job),
            "ran": _ran(job),
            "status": status,
            "error": {"message": message},
            "execution": {
                "id": job.execution_id,
                "remote_status": execution.status if execution else job.remote_status,
                "response": execution.response if execution else None,
            },
            "timings": _timings(job, now),
        }
        key = self.error_key(job.key)
        self._put(key, _json(document), "application/json", job)
        return self.uri(key)

    def _put(self, key: str, body: bytes, content_type: str, job: Job) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            # ASCII-only metadata: S3 rejects other characters in headers.
            Metadata={"vlmwatch-job-id": job.job_id},
        )


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False, default=str).encode()
