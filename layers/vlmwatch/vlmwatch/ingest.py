"""Ingest: turn one created object into one job and at most one VLM Run execution."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.events import S3ObjectRef
from vlmwatch.exceptions import (
    VlmRunAmbiguousSubmitError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
)
from vlmwatch.jobs import IN_FLIGHT, Job, JobStore, Status, job_id_for
from vlmwatch.routing import Route, Skip
from vlmwatch.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.vlmrun import Execution, VlmRunClient

logger = logging.getLogger(__name__)

# Files above this go through the presigned upload flow (the SDK's own threshold).
PRESIGNED_UPLOAD_THRESHOLD = 32 * 1024 * 1024


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    AMBIGUOUS = "ambiguous"


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
        s3: an S3 client for the input bucket (HEAD, presign, GET for uploads).
        vlmrun: a zero-argument callable returning the VLM Run client (built on first use, so a
            batch of skipped objects never reads the API key).
        sfn: a zero-argument callable returning a Step Functions client (stepfunctions mode only).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        s3: S3Client,
        vlmrun: Callable[[], VlmRunClient],
        sfn: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._sfn = sfn
        self._store = store
        self._s3 = s3
        self._vlmrun = vlmrun
        self._default = default_route(settings)
        self._blocked_until = 0.0

    @property
    def vlmrun(self) -> VlmRunClient:
        return self._vlmrun()

    def accept(self, ref: S3ObjectRef) -> Outcome:
        """Record a job for ``ref`` and start its execution, exactly once per object version.

        Raises:
            VlmRunRateLimitedError, VlmRunUnavailableError, VlmRunAuthError: nothing was started; retry the event.
        """
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
        decision = self._settings.routing_rules.resolve(
            source.key, source.content_type, source.metadata, default=self._default
        )
        if isinstance(decision, Route) and decision.model is None:
            # Record the model that actually runs, so the result document says so.
            decision = decision.model_copy(update={"model": self._settings.model})
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
        if not self._store.create(job):
            existing = self._store.get(job_id)
            if existing is None or existing.status != Status.RECEIVED or existing.submit_started_at:
                logger.info(
                    "duplicate event ignored", extra={"job_id": job_id, "status": getattr(existing, "status", None)}
                )
                if existing is not None and (existing.status in IN_FLIGHT or existing.submit_started_at):
                    # An earlier attempt may have died between submit and starting its tracker; the
                    # start is idempotent (the execution is named by the job id), so make sure.
                    self.start_tracking(job_id)
                return Outcome.DUPLICATE
            job = existing  # an earlier attempt was rate limited: try again
        if isinstance(decision, Skip):
            logger.info("object skipped", extra={"job_id": job_id, "reason": decision.reason})
            return Outcome.SKIPPED
        outcome = self.submit(job)
        if outcome in (Outcome.SUBMITTED, Outcome.AMBIGUOUS):
            self.start_tracking(job_id)
        return outcome

    def start_tracking(self, job_id: str) -> None:
        """stepfunctions mode: start the job's poller execution, named by the job id.

        AWS rejects a second execution with the same name (ExecutionAlreadyExists), which makes this
        safe to call again on a redelivered event.
        """
        if not self._settings.state_machine_arn or self._sfn is None:
            return
        try:
            self._sfn().start_execution(
                stateMachineArn=self._settings.state_machine_arn,
                name=job_id,
                input=json.dumps({"job_id": job_id, "wait_seconds": self._settings.first_poll_seconds}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            logger.info("tracker already started", extra={"job_id": job_id})

    def submit(self, job: Job) -> Outcome:
        """Start the execution for a ``received`` job, guarded by the submit claim."""
        if self._store.now() < self._blocked_until:
            # Another record in this process just got a 429: don't spend a request to hear it again.
            exc = VlmRunRateLimitedError(
                "rate limited by VLM Run earlier in this batch; not sent",
                retry_after=self._blocked_until - self._store.now(),
            )
            self._store.release_submit(job.job_id, error=str(exc))
            raise exc
        if not self._store.claim_submit(job.job_id):
            return Outcome.DUPLICATE
        try:
            body = self.request_body(job)
            execution = self.vlmrun.execute(body)
        except VlmRunRateLimitedError as exc:
            self._blocked_until = self._store.now() + exc.retry_after
            self._store.release_submit(job.job_id, error=str(exc))
            raise
        except VlmRunAmbiguousSubmitError as exc:
            logger.error(
                "ambiguous submit; will reconcile instead of re-sending",
                extra={"job_id": job.job_id, "error": str(exc)},
            )
            self._store.mark_ambiguous(job.job_id, str(exc), self._store.now() + self._settings.reconcile_grace_seconds)
            return Outcome.AMBIGUOUS
        except VlmRunRejectedError as exc:
            logger.error("VLM Run rejected the execution", extra={"job_id": job.job_id, "error": str(exc)})
            self._store.transition(
                job.job_id, Status.FAILED, set_fields={"error": exc.message}, remove_fields=("submit_started_at",)
            )
            return Outcome.REJECTED
        except VlmRunError as exc:
            # Nothing was created (bad credentials, no connection, upload failed): give the claim back so
            # the retried message can submit, and say why the job is waiting.
            self._store.release_submit(job.job_id, error=str(exc))
            raise
        except BaseException:
            self._store.release_submit(job.job_id)
            raise
        self.record_started(job, execution)
        return Outcome.SUBMITTED

    def record_started(self, job: Job, execution: Execution) -> None:
        now = self._store.now()
        self._store.mark_submitted(
            job.job_id,
            execution.id,
            execution.status,
            next_poll_at=now + self._settings.first_poll_seconds,
            deadline_at=now + self._settings.job_deadline_seconds,
        )
        logger.info("execution started", extra={"job_id": job.job_id, "execution_id": execution.id})

    def request_body(self, job: Job) -> dict[str, Any]:
        """The ``POST /agent/execute`` body for a job."""
        route = job.route
        assert route is not None, "a received job always has a route"
        body: dict[str, Any] = {
            "name": route.agent,
            "inputs": {"file": self._input_file(job)},
            "batch": True,
            "model": route.model or self._settings.model,
            "metadata": {"environment": self._settings.vlmrun_environment, "allow_training": False},
        }
        if route.prompt:
            config: dict[str, Any] = {"prompt": route.prompt}
            if route.json_schema is not None:
                config["json_schema"] = route.json_schema
            body["config"] = config
        if self._settings.callback_url:
            body["callback_url"] = self._settings.callback_url
        return body

    def _input_file(self, job: Job) -> dict[str, Any]:
        # Always the exact version the job is about, even if the key was overwritten since.
        params: dict[str, Any] = {"Bucket": job.bucket, "Key": job.key}
        if job.version_id:
            params["VersionId"] = job.version_id
        if self._settings.input_mode == "url":
            url = self._s3.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self._settings.presign_ttl_seconds
            )
            return {"type": "input_file", "file_url": url}
        obj = self._s3.get_object(**params)
        content = obj["Body"].read()
        name = job.key.rsplit("/", 1)[-1]
        ctype = job.content_type or "application/octet-stream"
        if len(content) > PRESIGNED_UPLOAD_THRESHOLD:
            info = self.vlmrun.upload_file_presigned(name, content, ctype)
        else:
            info = self.vlmrun.upload_file(name, content, ctype)
        return {"type": "input_file", "file_id": info.id}

    def _head(self, ref: S3ObjectRef) -> SourceObject | None:
        for key in ref.key_candidates():
            params: dict[str, Any] = {"Bucket": ref.bucket, "Key": key}
            if ref.version_id:
                params["VersionId"] = ref.version_id
            try:
                return SourceObject(key, self._s3.head_object(**params))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "404",
                    "NoSuchKey",
                    "NotFound",
                    "NoSuchVersion",
                    "400",
                ):
                    raise
        return None
