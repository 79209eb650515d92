"""Tracking: learn an execution's status and fold it into the job row; sweep what is stuck.

Used by all three ways of learning of a change (scheduled poller, Step Functions loop, webhook):
each calls :meth:`Tracker.poll_job` or :meth:`Tracker.apply`, which end in the same conditional
:meth:`JobStore.transition`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmwatch.exceptions import VlmRunError, VlmRunRateLimitedError, VlmRunRejectedError
from vlmwatch.jobs import IN_FLIGHT, TERMINAL, Job, JobStore, Status, bounded
from vlmwatch.pressure import Backpressure
from vlmwatch.settings import Settings
from vlmwatch.submit import Submitter
from vlmwatch.vlmrun import KNOWN_STATUSES

if TYPE_CHECKING:
    from vlmwatch.delivery import Deliverer
    from vlmwatch.vlmrun import Execution, VlmRunClient

logger = logging.getLogger(__name__)

# Largest execution kept on the job row for delivery (a DynamoDB item holds 400 KB in all).
SNAPSHOT_MAX_BYTES = 64 * 1024
USAGE_MAX_BYTES = 4 * 1024


@dataclass
class StepResult:
    """What one Step Functions iteration needs: stop, or wait ``wait_seconds`` and poll again."""

    job_id: str
    status: str
    terminal: bool
    wait_seconds: int


@dataclass
class PollSummary:
    due: int = 0
    claimed: int = 0
    polled: int = 0
    changed: int = 0
    finished: int = 0
    timed_out: int = 0
    errors: int = 0
    submitted: int = 0
    redelivered: int = 0
    rate_limited: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)


class Tracker:
    """Polls executions, applies what it learns, and sweeps jobs that are stuck anywhere.

    Args:
        settings: backoff, deadline and concurrency settings.
        store: the job table.
        vlmrun: zero-argument callable returning the VLM Run client.
        submitter: the submit protocol (deferred, crashed and ambiguous submits are moved on by it).
        pressure: the process's shared 429 back-pressure.
        deliverer: zero-argument callable returning the deliverer (the sweeper redelivers with it).
        rng: jitter source, injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        vlmrun: Callable[[], VlmRunClient],
        submitter: Submitter,
        pressure: Backpressure,
        deliverer: Callable[[], Deliverer] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._vlmrun = vlmrun
        self._submitter = submitter
        self._pressure = pressure
        self._deliverer = deliverer
        self._rng = rng or random.Random()

    def next_delay(self, job: Job, now: int) -> int:
        """Seconds until a job's next poll, shaped by how long it has been running at VLM Run.

        A job that has run for ``t`` seconds will likely run on for a time of the same order (durations
        are heavy-tailed: a 2-minute document and a 40-minute video share the table), so the next poll
        waits ``POLL_AGE_FACTOR x t``: the delay it adds to a result stays a bounded fraction of the
        job's own duration, and the polls it costs grow with the log of that duration. Age, unlike a
        count of polls, survives whatever broke the sequence (429 deferrals, a retry, the sweeper taking
        over from a state machine). Bounded by the first-poll delay and ``POLL_CAP_SECONDS``; jitter in
        ``[3/4 d, d]`` spreads jobs that were submitted together.
        """
        started = job.submitted_at or job.created_at
        age = max(0, now - started)
        delay = min(
            self._settings.poll_cap_seconds,
            max(self._settings.first_poll_seconds, self._settings.poll_age_factor * age),
        )
        return self._jitter(delay)

    def _jitter(self, delay: float) -> int:
        return max(1, int(self._rng.uniform(0.75 * delay, delay)))

    # -- the scheduled poller and sweeper -------------------------------------------------------

    def run(self) -> PollSummary:
        """One scheduled run: claim every due job (up to the limit) and move each on, with bounded concurrency.

        Due jobs are in-flight ones to poll, and every job stuck on the way: submits deferred by a
        429, claims whose submitter died, ambiguous submits whose evidence window is over, and
        finished jobs still undelivered after the delivery grace. In stepfunctions mode an in-flight
        job's ``next_poll_at`` is its state machine's next poll plus ``SWEEP_OVERDUE_SECONDS``: it comes
        due here only when its own state machine is gone.
        """
        now = self._store.now()
        summary = PollSummary()
        jobs = self._store.due(now, self._settings.poller_max_jobs)
        summary.due = len(jobs)
        claimed = [
            j
            for j in jobs
            if self._store.reschedule(
                j.job_id, now + self._settings.poll_claim_seconds, expect_next_poll_at=j.next_poll_at
            )
        ]
        summary.claimed = len(claimed)
        if not claimed:
            return summary
        listed = self._still_running(claimed)
        for job_id, result in listed.items():
            summary.outcomes[job_id] = result
            summary.polled += 1
        claimed = [j for j in claimed if j.job_id not in listed]
        with ThreadPoolExecutor(max_workers=self._settings.poller_concurrency) as pool:
            for job, result in zip(claimed, pool.map(self._move_safely, claimed), strict=True):
                summary.outcomes[job.job_id] = result
                summary.polled += result not in ("deferred", "redelivered", "submitted", "waiting")
                summary.changed += result in ("changed", "finished", "timed_out", "submitted", "adopted")
                summary.finished += result == "finished"
                summary.timed_out += result == "timed_out"
                summary.errors += result == "error"
                summary.submitted += result == "submitted"
                summary.redelivered += result == "redelivered"
                summary.rate_limited |= result == "deferred"
        return summary

    def _still_running(self, jobs: list[Job]) -> dict[str, str]:
        """With many jobs due, one list request instead of one GET each for those still running.

        Only a non-terminal status is taken from the list (the job is rescheduled, no GET); a job the list
        says has ended, or does not show, is polled by id as usual, so a result is always the execution's
        own full record. Returns what happened to each job handled here.
        """
        polling = [j for j in jobs if j.status in IN_FLIGHT and j.execution_id]
        threshold = self._settings.list_poll_min_jobs
        if not threshold or len(polling) < threshold or self._pressure.admit() is not None:
            return {}
        try:
            # Newest first: the jobs in flight are among the most recent executions.
            executions = self._vlmrun().list_executions(limit=min(100, max(len(polling) * 2, 20)))
        except VlmRunRateLimitedError as exc:
            self._pressure.block(exc.retry_after)  # every job of this run then waits, with no more requests
            return {}
        except VlmRunError as exc:
            logger.info("list poll failed; polling one by one", extra={"error": str(exc)})
            return {}
        by_id = {e.id: e for e in executions}
        handled: dict[str, str] = {}
        for job in polling:
            execution = by_id.get(job.execution_id or "")
            if execution is None or execution.is_terminal or execution.status not in KNOWN_STATUSES:
                continue
            try:
                handled[job.job_id] = self.apply(job, execution)
            except Exception:  # the job is polled by id instead
                logger.exception("applying a listed status failed", extra={"job_id": job.job_id})
        return handled

    def _move_safely(self, job: Job) -> str:
        try:
            if job.status == Status.RECEIVED:
                return str(self._submitter.advance(job))
            if job.status in TERMINAL:
                return self._redeliver(job)
            if job.status not in IN_FLIGHT:
                return "finished-already"
            wait_until = self._pressure.admit()
            if wait_until is not None:
                # A 429 just now, or the shared request budget is spent: put the job back, spread out.
                self._store.reschedule(job.job_id, wait_until, error="rate limited or request budget spent; deferred")
                return "deferred"
            return self.poll_job(job)
        except VlmRunRateLimitedError as exc:
            self._pressure.block(exc.retry_after)
            self._store.reschedule(job.job_id, self._pressure.retry_at(), error=bounded(str(exc)))
            return "deferred"
        except Exception as exc:  # one bad job must not stop the others; it is recorded and retried
            logger.exception("sweep step failed", extra={"job_id": job.job_id})
            now = self._store.now()
            self._store.reschedule(
                job.job_id,
                now + self.next_delay(job, now),
                error=bounded(f"{type(exc).__name__}: {exc}"),
            )
            return "error"

    def _redeliver(self, job: Job) -> str:
        """A finished job still undelivered after the grace: its stream record was lost or kept failing."""
        if self._deliverer is None:
            return "finished-already"
        logger.warning("delivering a job the stream did not", extra={"job_id": job.job_id, "status": job.status})
        self._deliverer().deliver(job.job_id)
        return "redelivered"

    # -- one job ------------------------------------------------------------------------------

    def poll_job(self, job: Job) -> str:
        """Poll one in-flight job once and apply the result. Returns what happened, for metrics and tests."""
        if job.status not in IN_FLIGHT:
            return "finished-already"
        assert job.execution_id is not None
        try:
            execution = self._vlmrun().get_execution(job.execution_id)
        except VlmRunRejectedError as exc:
            if exc.status_code == 404:
                moved = self._store.transition(
                    job.job_id,
                    Status.FAILED,
                    set_fields={"error": bounded(f"VLM Run has no execution {job.execution_id}: {exc.message}")},
                    count_poll=True,
                )
                return "finished" if moved else "stale"
            raise
        # The deadline is checked after this last look: a job that finished at VLM Run is never "timed out".
        return self.apply(job, execution)

    def time_out(self, job: Job, remote_status: str | None = None) -> str:
        last = remote_status or job.remote_status or "none"
        note = "" if last in KNOWN_STATUSES or last == "none" else " (a status vlmwatch does not know)"
        moved = self._store.transition(
            job.job_id,
            Status.TIMED_OUT,
            set_fields={
                "remote_status": last,
                "error": (
                    f"no final status from VLM Run within {self._settings.job_deadline_seconds} s "
                    f"(last remote status: {last}{note}, polls: {job.poll_count + 1})"
                ),
            },
        )
        return "timed_out" if moved else "stale"

    def apply(self, job: Job, execution: Execution, *, count_poll: bool = True) -> str:
        """Fold an execution's state into the job row (conditional: never backwards)."""
        now = self._store.now()
        remote = execution.status
        fields: dict[str, object] = {"remote_status": bounded(remote, 64)}
        if execution.usage is not None:
            # As JSON text: DynamoDB rejects Python floats, and usage is informational only.
            usage = execution.usage.model_dump_json(exclude_none=True)
            if len(usage) <= USAGE_MAX_BYTES:
                fields["usage"] = usage
        if remote == "completed":
            target = Status.COMPLETED
            # Keep what we just fetched, so delivery need not spend another request on it (if it fits).
            snapshot = execution.model_dump_json()
            if len(snapshot.encode()) <= SNAPSHOT_MAX_BYTES:
                fields["execution_snapshot"] = snapshot
        elif remote == "failed":
            target = Status.FAILED
            fields["error"] = bounded(execution.error_message())
        elif remote == "cancelled":
            target = Status.FAILED
            fields["error"] = f"the execution {execution.id} was cancelled at VLM Run"
        elif remote in KNOWN_STATUSES:
            target = Status(remote)
        else:
            target = job.status  # unknown: keep the job where it is, remember what VLM Run said
        if target not in TERMINAL:
            if job.deadline_at is not None and now >= job.deadline_at:
                return self.time_out(job, remote)
            fields["next_poll_at"] = now + self.next_delay(job, now) + self._settings.sweep_overdue_seconds
        moved = target != job.status and self._store.transition(
            job.job_id, target, set_fields=fields, count_poll=count_poll
        )
        if not moved:
            current = self._store.get(job.job_id)
            if current is not None and current.status in IN_FLIGHT and target not in TERMINAL:
                # Same status again (or an unknown one): keep the job scheduled and the remote status current.
                self._store.reschedule(
                    job.job_id, int(str(fields["next_poll_at"])), count_poll=count_poll, remote_status=remote[:64]
                )
                if current.status == target:
                    return "unchanged"
            logger.info(
                "stale status ignored",
                extra={"job_id": job.job_id, "remote": remote, "current": getattr(current, "status", None)},
            )
            return "stale"
        if target in TERMINAL:
            return "finished"
        return "changed"

    # -- the Step Functions loop ----------------------------------------------------------------

    def step(self, job_id: str) -> StepResult:
        """Poll one job once (a state machine iteration) and say whether to continue and how long to wait."""
        job = self._store.get(job_id)
        if job is None:
            return StepResult(job_id, "missing", True, 0)
        if job.status in IN_FLIGHT:
            wait_until = self._pressure.admit()
            if wait_until is not None:
                return StepResult(job_id, job.status.value, False, max(1, wait_until - self._store.now()))
            try:
                self.poll_job(job)
            except VlmRunRateLimitedError as exc:
                self._pressure.block(exc.retry_after)
                wait = max(1, int(exc.retry_after)) + self._jitter(self._settings.poll_base_seconds)
                return StepResult(job_id, job.status.value, False, wait)
            except VlmRunError as exc:
                # Transient trouble at VLM Run: the loop waits and tries again; the deadline still applies.
                logger.warning("poll failed; will retry", extra={"job_id": job_id, "error": str(exc)})
                now = self._store.now()
                self._store.reschedule(
                    job_id,
                    now + self.next_delay(job, now) + self._settings.sweep_overdue_seconds,
                    error=bounded(str(exc)),
                )
        fresh = self._store.get(job_id) or job
        terminal = fresh.status not in IN_FLIGHT
        due = (fresh.next_poll_at or 0) - self._settings.sweep_overdue_seconds  # the sweeper's margin is not ours
        wait = max(1, due - self._store.now()) if not terminal else 0
        return StepResult(job_id, fresh.status.value, terminal, wait)

    def record_failure(self, job_id: str, error: str, cause: str) -> StepResult:
        """The state machine's Catch: this loop gives up, the job does not.

        Polling broke repeatedly (a DynamoDB throttle, a bug): the job's row keeps the reason and stays
        in flight, so the scheduled sweeper takes it over once it is overdue. A job is failed only by
        what VLM Run says, or by its deadline.
        """
        job = self._store.get(job_id)
        if job is not None and job.status in IN_FLIGHT:
            self._store.reschedule(
                job_id,
                self._store.now(),
                error=bounded(f"poller state machine stopped: {error}: {cause}", 2000),
            )
        fresh = self._store.get(job_id)
        return StepResult(job_id, fresh.status.value if fresh else "missing", True, 0)
