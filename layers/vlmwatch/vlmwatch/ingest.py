"""Ingest: turn one created object into one job row, then hand it to the submit protocol.

The row is written (conditionally, one per object version) before anything is sent to VLM Run, and
it is in the sweeper's index from the start: whatever happens to this process afterwards, the job
is found again. VLM Run trouble never fails the SQS message (the row waits instead); only AWS
trouble does, and then the message is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.events import S3ObjectRef
from vlmwatch.jobs import Job, JobStore, Status, job_id_for
from vlmwatch.routing import Route, Skip
from vlmwatch.settings import Settings
from vlmwatch.submit import Outcome, Submitter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchVersion", "400")


class SourceUnreadableError(Exception):
    """Every candidate key answered 403: the object is gone and we lack s3:ListBucket, or we may not read it."""


class SourceObject:
    """What a HEAD of the input object told us."""

    def __init__(self, key: str, head: Mapping[str, Any]) -> None:
        self.key = key
        self.version_id: str | None = head.get("VersionId") if head.get("VersionId") not in (None, "null") else None
        self.etag: str | None = (head.get("ETag") or "").strip('"') or None
        self.size: int | None = head.get("ContentLength")
        self.content_type: str | None = head.get("ContentType")
        self.metadata: dict[str, str] = head.get("Metadata") or {}


def default_route(settings: Settings) -> Route | None:
    if settings.default_agent:
        return Route(rule="default", agent=settings.default_agent, model=settings.model)
    if settings.default_prompt:
        return Route(
            rule="default",
            prompt=settings.default_prompt,
            json_schema=settings.default_json_schema,
            model=settings.model,
        )
    return None


class Ingestor:
    """Creates jobs and starts executions.

    Args:
        settings: the deployment's settings.
        store: the job table.
        s3: an S3 client for the input bucket (HEAD).
        submitter: the submit-exactly-once protocol.
    """

    def __init__(self, settings: Settings, store: JobStore, s3: S3Client, submitter: Submitter) -> None:
        self._settings = settings
        self._store = store
        self._s3 = s3
        self._submitter = submitter
        self._default = default_route(settings)

    def accept(self, ref: S3ObjectRef) -> Outcome:
        """Record a job for ``ref`` and start its execution, exactly once per object version.

        Raises:
            ClientError, SourceUnreadableError: AWS failed us; nothing was recorded, retry the event.
        """
        expected = self._settings.input_bucket
        if expected and ref.bucket != expected:
            # The queue should only carry the input bucket's events; anything else (a mis-wired rule, a
            # forged message) must not make us read, or write jobs for, another bucket. Retrying cannot help.
            logger.error(
                "event for a bucket this deployment does not watch: refused",
                extra={"event_bucket": ref.bucket, "input_bucket": expected, "key": ref.key},
            )
            return Outcome.FOREIGN
        source = self._head(ref)
        now = self._store.now()
        if source is None:
            key = ref.key_candidates()[0]
            version = ref.version_id or f"etag:{ref.etag}"
            job = Job(
                job_id=job_id_for(ref.bucket, key, version),
                bucket=ref.bucket,
                key=key,
                version_id=ref.version_id,
                etag=ref.etag,
                size=ref.size,
                status=Status.SKIPPED,
                skip_reason="the object no longer exists (deleted before it was processed)",
                created_at=now,
                updated_at=now,
            )
            self._store.create(job)
            logger.warning("object missing, job skipped", extra={"job_id": job.job_id, "key": key})
            return Outcome.SKIPPED

        version_id = ref.version_id or source.version_id
        version = version_id or f"etag:{ref.etag or source.etag}"
        job_id = job_id_for(ref.bucket, source.key, version)
        decision: Route | Skip
        if source.key.endswith("/") and not source.size:
            decision = Skip(rule=None, reason="a folder marker (a zero-byte object whose key ends in '/'), not a file")
        elif source.size == 0:
            decision = Skip(rule=None, reason="an empty object (0 bytes): nothing to extract")
        else:
            resolved = self._settings.routing_rules.resolve(
                source.key, source.content_type, source.metadata, default=self._default
            )
            if isinstance(resolved, Route) and resolved.model is None:
                # Record the model that actually runs, so the result document says so.
                resolved = resolved.model_copy(update={"model": self._settings.model})
            decision = resolved
        job = Job(
            job_id=job_id,
            bucket=ref.bucket,
            key=source.key,
            version_id=version_id,
            etag=ref.etag or source.etag,
            size=source.size,
            content_type=source.content_type,
            route=decision if isinstance(decision, Route) else None,
            status=Status.SKIPPED if isinstance(decision, Skip) else Status.RECEIVED,
            skip_reason=decision.reason if isinstance(decision, Skip) else None,
            created_at=now,
            updated_at=now,
        )
        if not self._store.create(job, due_at=now + self._settings.submit_lease_seconds):
            existing = self._store.get(job_id)
            if (
                existing is not None
                and existing.status == Status.RECEIVED
                and existing.submit_started_at is None
                and (existing.next_poll_at or 0) <= now
            ):
                return self._submitter.submit(existing)  # a deferred submit that is due: try it now
            logger.info(
                "duplicate event ignored", extra={"job_id": job_id, "status": getattr(existing, "status", None)}
            )
            return Outcome.DUPLICATE
        if isinstance(decision, Skip):
            logger.info("object skipped", extra={"job_id": job_id, "reason": decision.reason})
            return Outcome.SKIPPED
        return self._submitter.submit(job)

    def _head(self, ref: S3ObjectRef) -> SourceObject | None:
        denied = []
        for key in ref.key_candidates():
            params: dict[str, Any] = {"Bucket": ref.bucket, "Key": key}
            if ref.version_id:
                params["VersionId"] = ref.version_id
            try:
                return SourceObject(key, self._s3.head_object(**params))
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("403", "AccessDenied", "Forbidden"):
                    # Without s3:ListBucket a missing key answers 403, not 404: try the other spelling.
                    denied.append(key)
                    continue
                if code not in _MISSING:
                    raise
        if denied:
            raise SourceUnreadableError(
                f"access denied (403) on HEAD s3://{ref.bucket}/{denied[0]}: the function may not read it, "
                "or it is gone and the function lacks s3:ListBucket (which turns a 404 into a 403)"
            )
        return None
