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
               Where VLM Run echoes an execution's inputs, the execution carrying the exact input
               reference attempt n sent (its fingerprint is on the row) is evidence too: looked up in
               the executions list, newest first, when the window ends, before anything is re-sent.
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

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.claims import SubmitClaims
from vlmwatch.adapters.job_events import JobEvents
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.slots import InFlightSlots
from vlmwatch.adapters.statemachine import PollerStateMachine
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import (
    SecretUnavailableError,
    VlmRunAccountError,
    VlmRunAmbiguousSubmitError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
)
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch.core.schedule import Backoff, spread
from vlmwatch.core.settings import Settings
from vlmwatch.flows import pacing
from vlmwatch.flows.evidence import EchoLookup, Evidence
from vlmwatch.flows.request import RequestBuilder, sent_fingerprint

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.models import Execution

logger = logging.getLogger(__name__)


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
    IGNORED = "ignored"  # a key outside InputPrefix/InputSuffix (a backfill, a redrive): not read, not retried


class Submitter:
    """Runs the protocol above for one process.

    Args:
        settings: the deployment's settings.
        store: the job table.
        requests: builds each attempt's request (and uploads the input in upload mode).
        vlmrun: zero-argument callable returning the VLM Run client (built on first use).
        pressure: the process's shared 429 back-pressure.
        events: where ``Job Started`` goes once an execution is recorded (best effort), or None.
        state_machine: starts the job's poller state machine (stepfunctions mode), or None.
        slots: the cap on executions in flight (``MaxInFlight``), or None.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        requests: RequestBuilder,
        vlmrun: Callable[[], VlmRunClient],
        pressure: Backpressure,
        *,
        events: JobEvents | None = None,
        state_machine: PollerStateMachine | None = None,
        slots: InFlightSlots | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._claims = SubmitClaims(store)
        self._requests = requests
        self._vlmrun = vlmrun
        self._pressure = pressure
        self._events = events
        self._state_machine = state_machine
        self._slots = slots or InFlightSlots(None, "", 0)
        # Nothing was created (no connection, credentials, a failed upload): wait, doubling per attempt.
        self._retry = Backoff(base=settings.poll_base_seconds, cap=settings.poll_cap_seconds)
        # Evidence of which execution an ambiguous attempt made: a signed callback, or an echoed input.
        self.evidence = Evidence(store, self.record_started, EchoLookup(store, vlmrun, pressure, self._retry))

    @property
    def pressure(self) -> Backpressure:
        """The process's back-pressure (the webhook's re-fetches go through it too)."""
        return self._pressure

    # -- OPEN → CLAIMED → ... -------------------------------------------------------------------

    def submit(self, job: Job) -> Outcome:
        """Claim an ``OPEN`` job and POST it once. Never raises for VLM Run trouble: the row says what happened."""
        if self._store.now() >= job.created_at + self._settings.submit_deadline_seconds:
            return self._give_up(job)
        if not self._slots.take():
            # MaxInFlight executions are running: the plan's concurrency limit becomes work that waits.
            base = self._settings.poll_base_seconds
            retry_at = spread(self._store.now() + base, base)
            self._store.reschedule(job.job_id, retry_at, error="waiting: MaxInFlight executions are in flight")
            return Outcome.DEFERRED
        # A 429 of this process, or the deployment's request budget for this minute is spent: do not
        # spend a request to hear "429" again. The job waits on its row; nothing fails. (After the slot:
        # a breaker probe handed out here is always spent on a POST.)
        if pacing.hold(self._pressure, self._store, job.job_id, "start"):
            self._slots.give_back()
            return Outcome.DEFERRED
        try:
            return self._claim_and_send(job)
        finally:
            # The admitted POST was sent, or never will be (the claim was lost, the upload failed): no later
            # request of this thread may go out on it, past the gate (a breaker probe included).
            self._pressure.forfeit()

    def _claim_and_send(self, job: Job) -> Outcome:
        attempt = self._claims.claim(job.job_id, self._settings.submit_lease_seconds)
        if attempt is None:
            self._slots.give_back()
            return Outcome.DUPLICATE  # someone else holds the claim, or the job moved on
        body: dict[str, Any] = {}
        try:
            body = self._requests.body(job, attempt)
            execution = self._vlmrun().execute(body)
        except VlmRunRateLimitedError as exc:
            self._release(job, attempt, self._pressure.rate_limited(exc.retry_after), str(exc))
            return Outcome.DEFERRED
        except VlmRunAmbiguousSubmitError as exc:
            # The slot stays taken: an execution may be running.
            logger.error("ambiguous submit; waiting for evidence", extra={"job_id": job.job_id, "error": str(exc)})
            wait_until = self._store.now() + self._settings.ambiguous_wait_seconds
            sent = sent_fingerprint(body)
            if not self._claims.mark_ambiguous(job.job_id, attempt, str(exc), wait_until, input_ref=sent):
                # The job moved on meanwhile (a callback adopted an earlier attempt's execution): whatever
                # this attempt made is still a possible orphan, and stays on record as one.
                self._claims.note_ambiguous(job.job_id, attempt)
            return Outcome.AMBIGUOUS
        except VlmRunAccountError as exc:
            # Out of credits, or the key refused: a fact about the account (the breaker is open now).
            # The job waits on its row until the breaker lets a request through; it never fails for it.
            breaker = self._pressure.breaker
            retry_at = (
                breaker.resume_at() if breaker is not None else self._store.now() + int(self._retry.delay(attempt))
            )
            self._release(job, attempt, retry_at, str(exc))
            logger.warning("submit waiting for the account", extra={"job_id": job.job_id, "error": str(exc)})
            return Outcome.DEFERRED
        except VlmRunRejectedError as exc:
            logger.error("VLM Run rejected the execution", extra={"job_id": job.job_id, "error": exc.message})
            # Only while this attempt still holds the claim: a late answer never fails a newer attempt's job.
            if self._store.transition(
                job.job_id,
                Status.FAILED,
                set_fields={"error": exc.message},
                remove_fields=("submit_started_at",),
                expect={"attempts": attempt},
            ):
                self._slots.give_back()
            return Outcome.REJECTED
        except (VlmRunError, ClientError, SecretUnavailableError) as exc:
            # Nothing was created (no connection, credentials, the API key unreadable, the upload failed, or
            # S3 failed us before anything was sent): the job waits and retries.
            error = f"S3: {exc}" if isinstance(exc, ClientError) else str(exc)
            self._release(job, attempt, self._store.now() + int(self._retry.delay(attempt)), error)
            logger.warning("submit deferred", extra={"job_id": job.job_id, "error": error})
            return Outcome.DEFERRED
        self.record_started(job, execution)
        return Outcome.SUBMITTED

    def _release(self, job: Job, attempt: int, retry_at: int, error: str) -> None:
        """Nothing was created: the claim goes back (if this attempt still holds it), and so does its slot."""
        if self._claims.release(job.job_id, retry_at=retry_at, error=error, attempt=attempt):
            self._slots.give_back()

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
                self._claims.mark_ambiguous(
                    job.job_id,
                    attempt,
                    "the submitter stopped while sending (crash or timeout); outcome unknown",
                    now + self._settings.ambiguous_wait_seconds,
                )
                if self._settings.ambiguous_wait_seconds > 0:
                    return Outcome.WAITING
        elif job.ambiguous_inputs:
            # No callback came; but where VLM Run echoes inputs, the execution carrying the exact input
            # reference an ambiguous attempt sent is as good as one. Look before submitting again.
            found = self.evidence.adopt_by_echo(job)
            if found is not None:
                return Outcome(found)
        # Nothing was sent, or it was ambiguous and no evidence came: the next attempt (any earlier
        # ambiguous one stays on record). The attempt's slot is given back; the next one takes its own.
        if self._claims.release(job.job_id, retry_at=now, error=error, attempt=attempt):
            self._slots.give_back()
        fresh = self._store.get(job.job_id)
        if fresh is None or fresh.status != Status.RECEIVED or fresh.submit_started_at is not None:
            return Outcome.DUPLICATE
        return self.submit(fresh)

    def record_started(self, job: Job, execution: Execution) -> bool:
        """``received`` → ``submitted``; if the row already tracks another execution, this one is an orphan."""
        job_id = job.job_id
        now = self._store.now()
        breaker = self._pressure.breaker
        moved = self._claims.mark_submitted(
            job_id,
            execution.id,
            execution.status,
            next_poll_at=now + self._settings.first_poll_seconds + self._settings.sweep_overdue_seconds,
            deadline_at=now + self._settings.job_deadline_seconds,
            downtime_mark=breaker.downtime_mark() if breaker is not None else None,
        )
        if not moved:
            current = moved.current
            if current is not None and current.execution_id and current.execution_id != execution.id:
                self._store.add_orphan(job_id, execution.id)
            return False
        logger.info("execution started", extra={"job_id": job_id, "execution_id": execution.id})
        if self._state_machine is not None:
            self._state_machine.start(job_id, now, self._settings.first_poll_seconds)
        if self._events is not None and self._events.enabled:
            # What the row now says, without reading it again.
            started = job.model_copy(
                update={"status": Status.SUBMITTED, "execution_id": execution.id, "submitted_at": now}
            )
            self._events.started(started)
        return True

    # -- giving up ------------------------------------------------------------------------------

    def _give_up(self, job: Job) -> Outcome:
        breaker = self._pressure.breaker
        state = breaker.state() if breaker is not None else None
        if state is not None and state.open:
            reason = state.describe()  # the account's reason, not a file's
        else:
            reason = job.error or job.last_poll_error or "no submit attempt succeeded"
        self._store.transition(
            job.job_id,
            Status.FAILED,
            set_fields={
                "error": f"could not start a VLM Run execution within {self._settings.submit_deadline_seconds} s "
                f"({job.attempts} attempt(s)); last reason: {reason}"
            },
            remove_fields=("submit_started_at",),
        )
        return Outcome.FAILED
