"""The output writer: artifacts first, the result document last, an error document on failure.

Where things go is :mod:`vlmwatch.core.layout`; what the documents say is :mod:`vlmwatch.core.documents`.
This module only writes them. A version's documents are written once and never replaced by another
version's; the folder's top-level document is a copy of the *current* S3 version's outcome (see
:meth:`OutputWriter.publish_latest`), so an older version that finishes last never replaces a newer one
there. The result document is written last so a consumer that reacts to ``*.json`` always finds the
artifacts already in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify
from vlmwatch.core.documents import ArtifactRecord, error_document, result_document, to_bytes
from vlmwatch.core.errors import TooLargeError
from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.job import Job
from vlmwatch.core.layout import RESULT_NAME, OutputLayout
from vlmwatch.core.results_index import record_key, record_of, to_line

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.adapters.vlmrun.models import ArtifactStream, Execution

# Multipart part size for streamed artifacts: S3's minimum is 5 MiB; 8 MiB keeps the part count low
# (10,000 parts = 80 GB) while bounding what is held in memory.
PART_BYTES = 8 * 1024 * 1024


class OutputWriter:
    """Writes a job's outputs to the output bucket.

    Args:
        s3: a boto3 S3 client.
        bucket: the output bucket.
        prefix: prepended to every key ("" or ending in "/").
    """

    def __init__(self, s3: S3Client, bucket: str, prefix: str = "") -> None:
        self._s3 = s3
        self.layout = OutputLayout(bucket, prefix)
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return self.layout.uri(key)

    # -- writes ---------------------------------------------------------------------------------

    def put_artifact_stream(self, job: Job, stream: ArtifactStream, *, max_bytes: int) -> ArtifactRecord:
        """Copy a streamed artifact to S3 with at most one part (8 MiB) in memory.

        Small artifacts (one part) are one ``PutObject``; larger ones a multipart upload, aborted if
        anything fails so no partial object or orphaned parts are left.

        The job's execution id is kept in the object's metadata: a later try of the same delivery reuses the
        object only if that execution wrote it (:meth:`written_artifacts`).

        Raises:
            TooLargeError: the artifact is bigger than ``max_bytes`` (nothing is kept).
        """
        metadata = _metadata(job)
        if stream.length is not None and stream.length > max_bytes:
            raise TooLargeError(stream.object_id, stream.length, max_bytes)
        key = self.layout.artifact_key(job.key, job.version, stream.object_id, stream.content_type, job.run)
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
                            Metadata=metadata,
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

    def written_artifacts(self, job: Job, execution_id: str) -> dict[str, ArtifactRecord]:
        """The artifacts of ``execution_id`` already in this version's folder (an earlier try wrote them),
        by object id. One listing, then a HEAD per object found: only its own execution's objects count
        (a retried job's earlier execution may have used the same short ids)."""
        prefix = f"{self.layout.run_folder(job.key, job.version, job.run)}artifacts/"
        found: dict[str, ArtifactRecord] = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                object_id = key[len(prefix) :].split(".", 1)[0]  # ids hold no dot; "url_x.url.txt" has two
                head = self._s3.head_object(Bucket=self.bucket, Key=key)
                if head.get("Metadata", {}).get("vlmwatch-execution-id") != execution_id:
                    continue
                found[object_id] = ArtifactRecord(
                    object_id=object_id,
                    s3_uri=self.uri(key),
                    content_type=head.get("ContentType", "application/octet-stream"),
                    bytes=int(head.get("ContentLength", item.get("Size", 0))),
                )
        return found

    def put_result(
        self,
        job: Job,
        execution: Execution,
        artifacts: list[ArtifactRecord],
        now: int,
        *,
        missing: list[dict[str, str]] | None = None,
    ) -> str:
        key = self.layout.result_key(job.key, job.version, job.run)
        document = result_document(job, execution, artifacts, now, missing or [])
        self._put(key, to_bytes(document), "application/json", job)
        self._index(job, document, key)
        if job.retries:
            # A retried version that now succeeded: its earlier error document is no longer its outcome.
            self._s3.delete_object(Bucket=self.bucket, Key=self.layout.error_key(job.key, job.version, job.run))
        return key

    def put_error(self, job: Job, *, status: str, message: str, now: int, execution: Execution | None = None) -> str:
        key = self.layout.error_key(job.key, job.version, job.run)
        document = error_document(job, status=status, message=message, now=now, execution=execution)
        self._put(key, to_bytes(document), "application/json", job)
        self._index(job, document, key)
        return key

    def _index(self, job: Job, document: dict[str, Any], key: str) -> None:
        """The document's flat record in the results index (after the document: the index never names a
        document that is not there). Partitioned by the day the file was received, so a replayed or later
        delivery of this job overwrites its own record instead of adding a row on another day."""
        record = record_of(document, self.uri(key))
        index_key = record_key(self.layout.prefix, job.job_id, document["timings"]["received_at"])
        self._put(index_key, to_line(record), "application/x-ndjson", job)

    def publish_latest(self, job: Job, current: Callable[[], ObjectVersion | None]) -> str | None:
        """Make the key's stable document the current S3 version's outcome; returns its key, if any.

        ``current`` answers the input key's current version, or None when it is gone.
        Every delivery of any version (and run) of a key runs this after writing its own documents: it
        copies the current version's newest run's document (its own, or another's already written) to the
        stable path, then asks again. If the answer changed meanwhile it goes round again; if not, any
        newer version was uploaded after this write and its own delivery publishes after it. So the
        last write at the stable path is always the newest finished version's.
        """
        result_latest, error_latest = self.layout.latest_keys(job.key)
        published = None
        for _ in range(5):
            version = current()
            if version is None:
                return published  # the object is gone: keep what is there
            source = self._newest_outcome(job.key, version)
            if source is None:
                return published  # the current version has not finished: its own delivery publishes it
            target, other = (
                (result_latest, error_latest) if source.endswith("/" + RESULT_NAME) else (error_latest, result_latest)
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
            # Asked again after the copy: a newer version or a newer run that finished meanwhile publishes
            # after this write (its own delivery lists after writing its document), or this loop sees it now.
            if current() == version and self._newest_outcome(job.key, version) == source:
                return published
        return published

    def runs_written(self, input_key: str, version: ObjectVersion) -> set[int]:
        """The runs (2, 3, ...) of ``version`` with a folder in the bucket: one listing by delimiter."""
        prefix = self.layout.runs_prefix(input_key, version)
        runs: set[int] = set()
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                number = common["Prefix"][len(prefix) :].rstrip("/")
                if number.isdigit():
                    runs.add(int(number))
        return runs

    def _newest_outcome(self, input_key: str, version: ObjectVersion) -> str | None:
        """The document of the highest-numbered run of ``version`` that has one (runs are numbered in the
        order they were started, so a run that finishes late never outranks a newer one that finished).
        One listing answers it when there is only run 1, whose documents are the version folder's files."""
        layout = self.layout
        pages = list(
            self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=layout.version_folder(input_key, version), Delimiter="/"
            )
        )
        later = any(
            c["Prefix"] == layout.runs_prefix(input_key, version) for p in pages for c in p.get("CommonPrefixes", [])
        )
        for run in sorted(self.runs_written(input_key, version), reverse=True) if later else []:
            for key in (layout.result_key(input_key, version, run), layout.error_key(input_key, version, run)):
                if self._exists(key):
                    return key
        files = {item["Key"] for p in pages for item in p.get("Contents", [])}
        return next(
            (k for k in (layout.result_key(input_key, version), layout.error_key(input_key, version)) if k in files),
            None,
        )

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if classify(exc) == AwsErrorKind.NOT_FOUND:
                return False
            raise
        return True

    def _put(self, key: str, body: bytes, content_type: str, job: Job) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, Metadata=_metadata(job))


def _metadata(job: Job) -> dict[str, str]:
    """ASCII-only (S3 rejects other characters in headers): the job, and the execution that made the object."""
    metadata = {"vlmwatch-job-id": job.job_id}
    if job.execution_id:
        metadata["vlmwatch-execution-id"] = job.execution_id
    return metadata


def run_written(s3: S3Client, layout: OutputLayout, input_key: str, version: ObjectVersion, run: int) -> bool:
    """Whether anything of this run is in the output bucket: a document, an artifact or (run 1's folder is the
    version's) a later run. One listing of at most one key: a job row expires after ``ResultTtlDays``, the
    outputs it wrote never do."""
    listed = s3.list_objects_v2(Bucket=layout.bucket, Prefix=layout.run_folder(input_key, version, run), MaxKeys=1)
    return bool(listed.get("KeyCount") or listed.get("Contents"))
