"""Submit exactly once: the protocol that turns a ``received`` job into one VLM Run execution.

``POST /agent/execute`` has no idempotency key and its response echoes neither inputs nor metadata,
so the job row is the only lock and a signed callback is the only evidence of which execution is
whose. The protocol, as states of the job row (all in the sparse in-flight index, so the sweeper
sees every one of them):

``OPEN``       ``received``, no claim, ``next_poll_at`` = earliest try. Created so by ingest; a
               429, a refused connection, bad credentials or a failed upload put the job back
               here with a later ``next_poll_at`` (work waits, it never fails for a rate limit).
``CLAIMED``    ``received`` + ``submit_started_at`` + ``attempts = n``; ``next_poll_at`` = end of
               the lease. Only the claimer may POST. Outcomes:
               * 2xx with an id        → ``SUBMITTED`` (the execution is recorded on the row);
               * 429 / no connection / 401 / upload failed (nothing was created) → ``OPEN``;
               * other 4xx             → ``failed`` (VLM Run refused the request; error document);
               * timeout after send, 5xx, a 2xx without a readable id → ``AMBIGUOUS``;
               * the claimer dies      → the lease expires; the sweeper moves it to ``AMBIGUOUS``
                 (in upload mode, a claim with no uploaded file yet provably never POSTed → ``OPEN``).
``AMBIGUOUS``  ``CLAIMED`` + ``n in ambiguous_attempts``; due at the end of the evidence window.
               Evidence is a callback signed by VLM Run to the URL we sent with attempt n, which
               carries the job id, the attempt and our HMAC token: it → ``SUBMITTED`` (adopted).
               No evidence by the end of the window (always, without webhooks) → ``OPEN`` again:
               the next attempt is a second execution, and the attempt that may have made one is
               on the row as a possible orphan. A wrong document is worse than a duplicate.
``SUBMITTED``  ``submitted`` with ``execution_id``; tracked by the poller, state machine and webhook.
               Evidence arriving later for another execution of this job is recorded in
               ``orphan_execution_ids`` and never replaces the tracked one.

A job that cannot be started within ``SUBMIT_DEADLINE_SECONDS`` (a day by default) of its creation
fails with the last reason (unreachable, credentials, rate limited for a day), and gets an error
document like any failure; until then it waits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from botocore.exceptions import ClientError

from vlmwatch.exceptions import (
    VlmRunAmbiguousSubmitError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
)
from vlmwatch.jobs import Job, JobStore, Status, bounded
from vlmwatch.notify import JobEvents
from vlmwatch.pressure import Backpressure
from vlmwatch.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.vlmrun import Execution, VlmRunClient

logger = logging.getLogger(__name__)

# Files above this go through the presigned upload flow (the SDK's own threshold).
PRESIGNED_UPLOAD_THRESHOLD = 32 * 1024 * 1024


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    DEFERRED = "deferred"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    WAITING = "waiting"
    FAILED = "failed"
    FOREIGN = "foreign"  # an event for a bucket this deployment does not watch: refused, not retried


def callback_token(secret: str, job_id: str, attempt: int) -> str:
    """Our HMAC over (job id, attempt): a callback URL carrying it was written by us for that attempt."""
    return hmac.new(secret.encode(), f"{job_id}:{attempt}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_url(base: str, secret: str, job_id: str, attempt: int) -> str:
    """The webhook URL for one submit attempt: VLM Run calls it back, and so tells us which job it ran."""
    parts = urlsplit(base)
    query = urlencode({"job_id": job_id, "attempt": attempt, "token": callback_token(secret, job_id, attempt)})
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))


class Submitter:
    """Runs the protocol above for one process.

    Args:
        settings: the deployment's settings.
        store: the job table.
        s3: an S3 client for the input bucket (presign, GET for uploads).
        vlmrun: zero-argument callable returning the VLM Run client (built on first use).
        pressure: the process's shared 429 back-pressure.
        webhook_secret: zero-argument callable returning the webhook secret (webhooks on only).
        events: where ``Job Started`` goes once an execution is recorded (best effort), or None.
        sfn: zero-argument callable returning a Step Functions client (stepfunctions mode only).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        s3: S3Client,
        vlmrun: Callable[[], VlmRunClient],
        pressure: Backpressure,
        *,
        webhook_secret: Callable[[], str] | None = None,
        events: JobEvents | None = None,
        sfn: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._s3 = s3
        self._vlmrun = vlmrun
        self._pressure = pressure
        self._webhook_secret = webhook_secret
        self._events = events
        self._sfn = sfn

    # -- OPEN → CLAIMED → ... -------------------------------------------------------------------

    def submit(self, job: Job) -> Outcome:
        """Claim an ``OPEN`` job and POST it once. Never raises for VLM Run trouble: the row says what happened."""
        now = self._store.now()
        if self._past_start_deadline(job, now):
            return self._give_up(job)
        wait_until = self._pressure.admit()
        if wait_until is not None:
            # A 429 of this process, or the deployment's request budget for this minute is spent: do not
            # spend a request to hear "429" again. The job waits on its row; nothing fails.
            self._store.reschedule(job.job_id, wait_until, error="rate limited or request budget spent; waiting")
            return Outcome.DEFERRED
        attempt = self._store.claim_submit(job.job_id, self._settings.submit_lease_seconds)
        if attempt is None:
            return Outcome.DUPLICATE  # someone else holds the claim, or the job moved on
        try:
            body = self.request_body(job, attempt)
            execution = self._vlmrun().execute(body)
        except VlmRunRateLimitedError as exc:
            self._pressure.block(exc.retry_after)
            self._store.release_submit(job.job_id, retry_at=self._pressure.retry_at(), error=str(exc), attempt=attempt)
            return Outcome.DEFERRED
        except VlmRunAmbiguousSubmitError as exc:
            logger.error("ambiguous submit; waiting for evidence", extra={"job_id": job.job_id, "error": str(exc)})
            if not self._store.mark_ambiguous(
                job.job_id, attempt, str(exc), self._store.now() + self._settings.ambiguous_wait_seconds
            ):
                # The job moved on meanwhile (a callback adopted an earlier attempt's execution): whatever
                # this attempt made is still a possible orphan, and stays on record as one.
                self._store.note_ambiguous(job.job_id, attempt)
            return Outcome.AMBIGUOUS
        except VlmRunRejectedError as exc:
            logger.error("VLM Run rejected the execution", extra={"job_id": job.job_id, "error": exc.message})
            self._store.transition(
                job.job_id,
                Status.FAILED,
                set_fields={"error": bounded(exc.message)},
                remove_fields=("submit_started_at",),
            )
            return Outcome.REJECTED
        except VlmRunError as exc:
            # Nothing was created (no connection, credentials, the upload failed): the job waits and retries.
            retry_at = self._store.now() + self._retry_delay(attempt)
            self._store.release_submit(job.job_id, retry_at=retry_at, error=str(exc), attempt=attempt)
            logger.warning("submit deferred", extra={"job_id": job.job_id, "error": str(exc)})
            return Outcome.DEFERRED
        except ClientError as exc:
            # S3 failed us (presign/GET for upload) before anything was sent: the same, but it is ours.
            retry_at = self._store.now() + self._retry_delay(attempt)
            self._store.release_submit(job.job_id, retry_at=retry_at, error=f"S3: {exc}", attempt=attempt)
            return Outcome.DEFERRED
        self.record_started(job, execution)
        return Outcome.SUBMITTED

    def advance(self, job: Job) -> Outcome:
        """The sweeper's step for a due ``received`` job, whatever state of the protocol it is in."""
        now = self._store.now()
        if job.submit_started_at is None:
            return self.submit(job)  # OPEN and due: a deferred submit
        attempt = job.attempts
        error = None
        if attempt not in job.ambiguous_attempts:
            # CLAIMED and the lease is over: the claimer died mid-submit.
            if self._settings.input_mode == "upload" and not job.input_file_id:
                # It never got as far as the POST (the upload comes first and is recorded): no execution.
                error = "submitter stopped before sending"
            else:
                self._store.mark_ambiguous(
                    job.job_id,
                    attempt,
                    "the submitter stopped while sending (crash or timeout); outcome unknown",
                    now + self._settings.ambiguous_wait_seconds,
                )
                if self._settings.ambiguous_wait_seconds > 0:
                    return Outcome.WAITING
        # Nothing was sent, or it was ambiguous and no evidence came: the next attempt (any earlier
        # ambiguous one stays on record).
        self._store.release_submit(job.job_id, retry_at=now, error=error, attempt=attempt)
        fresh = self._store.get(job.job_id)
        if fresh is None or fresh.status != Status.RECEIVED or fresh.submit_started_at is not None:
            return Outcome.DUPLICATE
        return self.submit(fresh)

    # -- evidence -------------------------------------------------------------------------------

    def adopt(self, job_id: str, execution: Execution, attempt: int) -> str:
        """A signed callback for ``attempt`` of this job named ``execution``: it is ours.

        Returns "adopted", "tracked" (it is the execution already tracked) or "orphan".
        """
        job = self._store.get(job_id)
        if job is None:
            return "unknown"
        # Attempts up to retried_at_attempt belong to executions that ended before a `vlmwatch retry`.
        fresh_attempt = job.retried_at_attempt < attempt <= job.attempts
        if job.status == Status.RECEIVED and fresh_attempt and self._plausible(job, execution):
            if self.record_started(job, execution):
                logger.info("execution adopted on evidence", extra={"job_id": job_id, "execution_id": execution.id})
                return "adopted"
            job = self._store.get(job_id) or job
        if job.execution_id == execution.id:
            return "tracked"
        self._store.add_orphan(job_id, execution.id)
        logger.warning("orphan execution recorded", extra={"job_id": job_id, "execution_id": execution.id})
        return "orphan"

    def _plausible(self, job: Job, execution: Execution) -> bool:
        # Defence in depth behind the token: never adopt an execution of another agent.
        route = job.route
        return not (route and route.agent and execution.name and execution.name != route.agent)

    def record_started(self, job: Job, execution: Execution) -> bool:
        """``received`` → ``submitted``; if the row already tracks another execution, this one is an orphan."""
        job_id = job.job_id
        now = self._store.now()
        moved = self._store.mark_submitted(
            job_id,
            execution.id,
            execution.status,
            next_poll_at=now + self._settings.first_poll_seconds + self._settings.sweep_overdue_seconds,
            deadline_at=now + self._settings.job_deadline_seconds,
        )
        if not moved:
            current = self._store.get(job_id)
            if current is not None and current.execution_id and current.execution_id != execution.id:
                self._store.add_orphan(job_id, execution.id)
            return False
        logger.info("execution started", extra={"job_id": job_id, "execution_id": execution.id})
        self.start_tracking(job_id, now)
        if self._events is not None and self._events.enabled:
            # What the row now says, without reading it again.
            started = job.model_copy(
                update={"status": Status.SUBMITTED, "execution_id": execution.id, "submitted_at": now}
            )
            self._events.started(started)
        return True

    def start_tracking(self, job_id: str, submitted_at: int) -> None:
        """stepfunctions mode: start the job's poller state machine.

        Named by job id and submit time: a name stays taken for 90 days after its execution closes,
        so the job id alone would block tracking a re-sent event after the row expired. If this start
        is lost, the sweeper polls the job itself once it is overdue.
        """
        if not self._settings.state_machine_arn or self._sfn is None:
            return
        try:
            self._sfn().start_execution(
                stateMachineArn=self._settings.state_machine_arn,
                name=f"{job_id}-{submitted_at}",
                input=json.dumps({"job_id": job_id, "wait_seconds": self._settings.first_poll_seconds}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                logger.warning("tracker not started; the sweeper covers it", extra={"job_id": job_id})

    # -- the request ----------------------------------------------------------------------------

    def request_body(self, job: Job, attempt: int) -> dict[str, Any]:
        """The ``POST /agent/execute`` body for one attempt (the shapes the official SDK validates)."""
        route = job.route
        assert route is not None, "a received job always has a route"
        body: dict[str, Any] = {
            "name": route.agent,
            "inputs": {"file": self._input_file(job)},
            "batch": True,
            "model": route.model or self._settings.model,
            # session_id: the job id travels with the request, for VLM Run's logs and support.
            "metadata": {
                "environment": self._settings.vlmrun_environment,
                "session_id": job.job_id,
                "allow_training": False,
            },
        }
        if route.prompt:
            config: dict[str, Any] = {"prompt": route.prompt}
            if route.json_schema is not None:
                config["json_schema"] = route.json_schema
            body["config"] = config
        if self._settings.callback_url:
            secret = self._webhook_secret() if self._webhook_secret else ""
            body["callback_url"] = callback_url(self._settings.callback_url, secret, job.job_id, attempt)
        return body

    def _input_file(self, job: Job) -> str | dict[str, Any]:
        # Always the exact version the job is about, even if the key was overwritten since.
        params: dict[str, Any] = {"Bucket": job.bucket, "Key": job.key}
        if job.version_id:
            params["VersionId"] = job.version_id
        if self._settings.input_mode == "url":
            # The docs' own form: a bare URL string (MessageContent would need {"url": ...}).
            return str(
                self._s3.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=self._settings.presign_ttl_seconds
                )
            )
        file_id = job.input_file_id
        if not file_id:
            name = job.key.rsplit("/", 1)[-1]
            ctype = job.content_type or "application/octet-stream"
            client = self._vlmrun()
            size = job.size if job.size is not None else int(self._s3.head_object(**params)["ContentLength"])
            if size > self._settings.max_object_bytes:
                raise VlmRunRejectedError(
                    f"the input is {size:,} bytes, above the {self._settings.max_object_bytes:,}-byte limit "
                    "(MaxObjectBytes): not uploaded"
                )
            if size > PRESIGNED_UPLOAD_THRESHOLD:
                # Streamed from S3 to VLM Run's storage in 1 MiB chunks: memory stays flat for any size.
                def chunks() -> Iterator[bytes]:
                    return iter(self._s3.get_object(**params)["Body"].iter_chunks(1024 * 1024))

                info = client.upload_file_presigned(name, chunks, ctype, size=size)
            else:
                content = self._s3.get_object(**params)["Body"].read()
                info = client.upload_file(name, content, ctype)
            file_id = info.id
            # Recorded before the POST: every later attempt reuses it, and a claim that expires
            # without it provably never reached the POST.
            self._store.set_fields(job.job_id, {"input_file_id": file_id}, expect_status=Status.RECEIVED)
        return {"type": "input_file", "file_id": file_id}

    # -- giving up ------------------------------------------------------------------------------

    def _past_start_deadline(self, job: Job, now: int) -> bool:
        return now >= job.created_at + self._settings.submit_deadline_seconds

    def _give_up(self, job: Job) -> Outcome:
        reason = job.error or "no submit attempt succeeded"
        self._store.transition(
            job.job_id,
            Status.FAILED,
            set_fields={
                "error": bounded(
                    f"could not start a VLM Run execution within {self._settings.submit_deadline_seconds} s "
                    f"({job.attempts} attempt(s)); last reason: {reason}"
                )
            },
            remove_fields=("submit_started_at",),
        )
        return Outcome.FAILED

    def _retry_delay(self, attempt: int) -> int:
        base = self._settings.poll_base_seconds
        return int(min(self._settings.poll_cap_seconds, base * 2 ** max(0, attempt - 1)))
