"""The output writer: artifacts first, the result document last, an error document on failure.

Layout (``prefix`` is configurable), one folder per input key with fixed names inside::

    <prefix><key>.vlmwatch/result.json        the newest version's result document (vlmwatch.result/v1)
    <prefix><key>.vlmwatch/error.json         ... or its error document (vlmwatch.error/v1): one of the two
    <prefix><key>.vlmwatch/versions/<v>/result.json | error.json       one outcome per object version
    <prefix><key>.vlmwatch/versions/<v>/artifacts/<object_id>.<ext>   that version's artifacts

``<v>`` is the S3 version id (``etag-<etag>`` in an unversioned bucket). A version's documents are
written once and never replaced by another version's; the folder's top-level document is a copy of
the *current* S3 version's outcome (see :meth:`OutputWriter.publish_latest`), so an older version
that finishes last never replaces a newer one there.

No input key can write over another key's outputs: every output key is ``<prefix><key>.vlmwatch/``
followed by a suffix that never contains ``.vlmwatch/``, so the last ``.vlmwatch/`` in an output key
says which input key it belongs to. Keys too long for that (S3 keys end at 1,024 bytes) go under
``<prefix>.vlmwatch-long/<sha256 of the key>/`` instead, which holds no ``.vlmwatch/`` at all; the
documents inside still name the full source key.

The result document is written last so a consumer that reacts to ``*.json`` always finds the
artifacts already in place.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from vlmwatch.jobs import Job

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.vlmrun import ArtifactStream, Execution

MARKER = ".vlmwatch/"
LONG_FOLDER = ".vlmwatch-long/"
S3_KEY_LIMIT = 1024
# Room kept for what follows the folder: versions/<v>/artifacts/<object id>.<ext>.
SUFFIX_ROOM = 200
_SAFE_VERSION = re.compile(r"^[A-Za-z0-9_+=-]{1,128}$")
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


# Multipart part size for streamed artifacts: S3's minimum is 5 MiB; 8 MiB keeps the part count low
# (10,000 parts = 80 GB) while bounding what is held in memory.
PART_BYTES = 8 * 1024 * 1024


class TooLargeError(Exception):
    """An artifact or input above the configured limit (``MAX_OBJECT_BYTES``)."""

    def __init__(self, object_id: str, size: int, limit: int, *, at_least: bool = False) -> None:
        more = "more than " if at_least else ""
        super().__init__(
            f"{object_id} is {more}{size:,} bytes, above the {limit:,}-byte limit (MaxObjectBytes): not copied"
        )
        self.size = size
        self.limit = limit


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


def version_token(version_id: str | None, etag: str | None) -> str:
    """A path segment for one object version: the version id if it is plain, else a digest of it."""
    raw = version_id or f"etag-{(etag or 'none').strip(chr(34))}"
    return raw if _SAFE_VERSION.match(raw) else "h-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


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

    # -- where things go ----------------------------------------------------------------------

    def folder(self, input_key: str) -> str:
        folder = f"{self.prefix}{input_key}{MARKER}"
        if len(folder.encode()) + SUFFIX_ROOM > S3_KEY_LIMIT:
            folder = f"{self.prefix}{LONG_FOLDER}{hashlib.sha256(input_key.encode()).hexdigest()}/"
        return folder

    def version_folder(self, job: Job) -> str:
        return f"{self.folder(job.key)}versions/{version_token(job.version_id, job.etag)}/"

    def result_key(self, job: Job) -> str:
        return f"{self.version_folder(job)}result.json"

    def error_key(self, job: Job) -> str:
        return f"{self.version_folder(job)}error.json"

    def artifact_key(self, job: Job, object_id: str, content_type: str) -> str:
        return f"{self.version_folder(job)}artifacts/{object_id}.{artifact_extension(object_id, content_type)}"

    def latest_keys(self, input_key: str) -> tuple[str, str]:
        """(result, error) at the key's stable path."""
        folder = self.folder(input_key)
        return f"{folder}result.json", f"{folder}error.json"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- writes ---------------------------------------------------------------------------------

    def put_artifact_stream(self, job: Job, stream: ArtifactStream, *, max_bytes: int) -> ArtifactRecord:
        """Copy a streamed artifact to S3 with at most one part (8 MiB) in memory.

        Small artifacts (one part) are one ``PutObject``; larger ones a multipart upload, aborted if
        anything fails so no partial object or orphaned parts are left.

        Raises:
            TooLargeError: the artifact is bigger than ``max_bytes`` (nothing is kept).
        """
        if stream.length is not None and stream.length > max_bytes:
            raise TooLargeError(stream.object_id, stream.length, max_bytes)
        key = self.artifact_key(job, stream.object_id, stream.content_type)
        buffer = bytearray()
        total = 0
        upload_id: str | None = None
        parts: list[Any] = []

        def upload_part(upload: str, body: bytes) -> None:
            part = self._s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=body
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})

        try:
            for chunk in stream.chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise TooLargeError(stream.object_id, total, max_bytes, at_least=True)
                buffer += chunk
                if len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        upload_id = self._s3.create_multipart_upload(
                            Bucket=self.bucket,
                            Key=key,
                            ContentType=stream.content_type,
                            Metadata={"vlmwatch-job-id": job.job_id},
                        )["UploadId"]
                    upload_part(upload_id, bytes(buffer[:PART_BYTES]))
                    del buffer[:PART_BYTES]
            if upload_id is None:
                self._put(key, bytes(buffer), stream.content_type, job)
            else:
                if buffer:
                    upload_part(upload_id, bytes(buffer))
                self._s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return ArtifactRecord(
            object_id=stream.object_id, s3_uri=self.uri(key), content_type=stream.content_type, bytes=total
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
            "orphan_executions": job.orphan_execution_ids,
            "timings": _timings(job, now),
        }
        key = self.result_key(job)
        self._put(key, _json(document), "application/json", job)
        if job.retries:
            # A retried version that now succeeded: its earlier error document is no longer its outcome.
            self._s3.delete_object(Bucket=self.bucket, Key=self.error_key(job))
        return key

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
            "orphan_executions": job.orphan_execution_ids,
            "timings": _timings(job, now),
        }
        key = self.error_key(job)
        self._put(key, _json(document), "application/json", job)
        return key

    def publish_latest(self, job: Job, current: Callable[[], tuple[str | None, str | None] | None]) -> str | None:
        """Make the key's stable document the current S3 version's outcome; returns its key, if any.

        ``current`` answers the input key's current (version id, etag), or None when it is gone.
        Every delivery of any version of a key runs this after writing its own documents: it copies
        the current version's document (its own, or another version's that is already written) to the
        stable path, then asks again. If the answer changed meanwhile it goes round again; if not, any
        newer version was uploaded after this write and its own delivery publishes after it. So the
        last write at the stable path is always the newest finished version's.
        """
        result_latest, error_latest = self.latest_keys(job.key)
        published = None
        for _ in range(5):
            head = current()
            if head is None:
                return published  # the object is gone: keep what is there
            version_id, etag = head
            folder = f"{self.folder(job.key)}versions/{version_token(version_id, etag)}/"
            source = next((k for k in (f"{folder}result.json", f"{folder}error.json") if self._exists(k)), None)
            if source is None:
                return published  # the current version has not finished: its own delivery publishes it
            target, other = (
                (result_latest, error_latest) if source.endswith("result.json") else (error_latest, result_latest)
            )
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="COPY",
            )
            if self._exists(other):
                self._s3.delete_object(Bucket=self.bucket, Key=other)  # one outcome at the stable path
            published = target
            if current() == head:
                return published
        return published

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

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
