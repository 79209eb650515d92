"""Tracking: learn an execution's status and fold it into the job row.

Used by all three ways of learning of a change (scheduled poller, Step Functions loop, webhook):
each calls :meth:`Tracker.poll_job` or :meth:`Tracker.apply`, which end in the same conditional
:meth:`JobStore.transition`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmwatch.exceptions import VlmRunError, VlmRunRateLimitedError, VlmRunRejectedError
from vlmwatch.ingest import Ingestor
from vlmwatch.jobs import IN_FLIGHT, TERMINAL, Job, JobStore, Status
from vlmwatch.settings import Settings

if TYPE_CHECKING:
    from vlmwatch.vlmrun import Execution, VlmRunClient

logger = logging.getLogger(__name__)

# How long a poller's claim on a job lasts: longer than one poll can take, so a second
# overlapping run sees the job as not due and leaves it alone.
CLAIM_SECONDS = 120


# Largest execution kept on the job row for delivery (a DynamoDB item holds 400 KB in all).
SNAPSHOT_MAX_BYTES = 64 * 1024


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
    rate_limited: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)


class Tracker:
    """Polls executions and applies what it learns.

    Args:
        settings: backoff, deadline and concurrency settings.
        store: the job table.
        vlmrun: zero-argument callable returning the VLM Run client.
        ingestor: used to re-submit a job whose ambiguous submit provably created nothing.
        rng: jitter source, injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        vlmrun: Callable[[], VlmRunClient],
        ingestor: Ingestor,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._vlmrun = vlmrun
        self._ingestor = ingestor
        self._rng = rng or random.Random()
        # After a 429, VLM Run's Retry-After holds for every job: the rest of the run waits too.
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def backoff(self, poll_count: int) -> int:
        """Seconds until the next poll: exponential in polls so far, capped, with jitter in [d/2, d]."""
        base = self._settings.first_poll_seconds
        delay = min(self._settings.poll_cap_seconds, base * 2 ** max(0, poll_count))
        return max(1, int(self._rng.uniform(delay / 2, delay)))

    # -- the scheduled poller -------------------------------------------------------------------

    def run(self) -> PollSummary:
        """One scheduled run: claim every due job (up to the limit) and poll them with bounded concurrency."""
        now = self._store.now()
        summary = PollSummary()
        jobs = self._store.due(now, self._settings.poller_max_jobs)
        summary.due = len(jobs)
        claimed = [
            j for j in jobs if self._store.reschedule(j.job_id, now + CLAIM_SECONDS, expect_next_poll_at=j.next_poll_at)
        ]
        summary.claimed = len(claimed)
        if not claimed:
            return summary
        with ThreadPoolExecutor(max_workers=self._settings.poller_concurrency) as pool:
            for job, result in zip(claimed, pool.map(self._poll_safely, claimed), strict=True):
                summary.outcomes[job.job_id] = result
                summary.polled += result != "deferred"
                summary.changed += result in ("changed", "finished", "timed_out", "resubmitted", "adopted")
                summary.finished += result == "finished"
                summary.timed_out += result == "timed_out"
                summary.errors += result == "error"
                summary.rate_limited |= result == "deferred"
        return summary

    def _poll_safely(self, job: Job) -> str:
        now = self._store.now()
        with self._lock:
            blocked_until = self._blocked_until
        if now < blocked_until:
            # Don't spend a request to hear "429" again: put the job back, spread over the next seconds.
            self._store.reschedule(job.job_id, int(blocked_until) + self.backoff(0), error="rate limited; deferred")
            return "deferred"
        try:
            return self.poll_job(job)
        except VlmRunRateLimitedError as exc:
            wait = max(int(exc.retry_after), 1)
            with self._lock:
                self._blocked_until = max(self._blocked_until, now + wait)
            self._store.reschedule(job.job_id, now + wait + self.backoff(0), error=str(exc))
            return "deferred"
        except Exception as exc:  # one bad job must not stop the others; it is recorded and retried
            logger.exception("poll failed", extra={"job_id": job.job_id})
            self._store.reschedule(
                job.job_id, self._store.now() + self.backoff(job.poll_count), error=f"{type(exc).__name__}: {exc}"
            )
            return "error"

    # -- one job ------------------------------------------------------------------------------

    def poll_job(self, job: Job) -> str:
        """Poll one job once and apply the result. Returns what happened, for metrics and tests."""
        now = self._store.now()
        if job.status == Status.RECEIVED:
            return self.reconcile(job)
        if job.status not in IN_FLIGHT:
            return "finished-already"
        if job.deadline_at is not None and now >= job.deadline_at:
            return self.time_out(job)
        assert job.execution_id is not None
        try:
            execution = self._vlmrun().get_execution(job.execution_id)
        except VlmRunRejectedError as exc:
            if exc.status_code == 404:
                moved = self._store.transition(
                    job.job_id,
                    Status.FAILED,
                    set_fields={"error": f"VLM Run has no execution {job.execution_id}: {exc.message}"},
                    count_poll=True,
                )
                return "finished" if moved else "stale"
            raise
        return self.apply(job, execution)

    def time_out(self, job: Job) -> str:
        moved = self._store.transition(
            job.job_id,
            Status.TIMED_OUT,
            set_fields={
                "error": (
                    f"no final status from VLM Run within {self._settings.job_deadline_seconds} s "
                    f"(last remote status: {job.remote_status or 'none'}, polls: {job.poll_count})"
                )
            },
        )
        return "timed_out" if moved else "stale"

    def apply(self, job: Job, execution: Execution, *, count_poll: bool = True) -> str:
        """Fold an execution's state into the job row (conditional: never backwards)."""
        now = self._store.now()
        target = Status(execution.status)
        fields: dict[str, object] = {"remote_status": execution.status}
        if execution.usage is not None:
            # As JSON text: DynamoDB rejects Python floats, and usage is informational only.
            fields["usage"] = execution.usage.model_dump_json(exclude_none=True)
        if target == Status.FAILED:
            fields["error"] = execution.error_message()
        if target == Status.COMPLETED:
            # Keep what we just fetched, so delivery need not spend another request on it (if it fits).
            snapshot = execution.model_dump_json()
            if len(snapshot.encode()) <= SNAPSHOT_MAX_BYTES:
                fields["execution_snapshot"] = snapshot
        if target not in TERMINAL:
            if job.deadline_at is not None and now >= job.deadline_at:
                return self.time_out(job)
            fields["next_poll_at"] = now + self.backoff(job.poll_count + 1)
        moved = self._store.transition(job.job_id, target, set_fields=fields, count_poll=count_poll)
        if not moved:
            # Out of order or a duplicate: the job is already here or further along.
            current = self._store.get(job.job_id)
            logger.info(
                "stale status ignored",
                extra={"job_id": job.job_id, "remote": execution.status, "current": getattr(current, "status", None)},
            )
            if current is not None and current.status in IN_FLIGHT and target not in TERMINAL:
                # Keep the job scheduled even though the status write lost (e.g. equal status).
                self._store.reschedule(job.job_id, now + self.backoff(job.poll_count + 1), count_poll=True)
            return "stale"
        if target in TERMINAL:
            return "finished"
        return "changed" if target != job.status else "unchanged"

    def reconcile(self, job: Job) -> str:
        """Settle a submit whose outcome is unknown: adopt the execution it made, or submit again."""
        now = self._store.now()
        if job.submit_started_at is None:
            return self._resubmit(job)  # an earlier resubmit was rate limited: nothing is in flight
        started = job.submit_started_at
        grace = self._settings.reconcile_grace_seconds
        if now - started < grace:
            self._store.reschedule(job.job_id, started + grace)
            return "unchanged"
        client = self._vlmrun()
        recent = client.list_executions(limit=100)
        candidates = []
        for execution in recent:
            created = int(execution.created_at.timestamp()) if execution.created_at else None
            if created is None or not (started - 30 <= created <= started + 300):
                continue
            if job.route and job.route.agent and execution.name and execution.name != job.route.agent:
                continue
            if self._store.find_by_execution(execution.id) is not None:
                continue
            candidates.append(execution)
        if len(candidates) == 1:
            self._ingestor.record_started(job, candidates[0])
            logger.info("ambiguous submit adopted", extra={"job_id": job.job_id, "execution_id": candidates[0].id})
            return "adopted"
        if not candidates:
            # VLM Run has no execution from that attempt: it never happened, so submitting is safe.
            self._store.release_submit(job.job_id)
            return self._resubmit(job)
        ids = ", ".join(c.id for c in candidates[:5])
        self._store.transition(
            job.job_id,
            Status.FAILED,
            set_fields={
                "error": (
                    f"submit outcome unknown and {len(candidates)} executions could match ({ids}); "
                    "not re-sent to avoid a duplicate. Check these in VLM Run and re-upload if needed."
                )
            },
            remove_fields=("submit_started_at",),
        )
        return "finished"

    def _resubmit(self, job: Job) -> str:
        fresh = self._store.get(job.job_id)
        if fresh is None or fresh.status != Status.RECEIVED:
            return "stale"
        try:
            outcome = self._ingestor.submit(fresh)
        except VlmRunError:
            self._store.reschedule(job.job_id, self._store.now() + self.backoff(job.attempts))
            raise
        return "resubmitted" if outcome == "submitted" else str(outcome)

    # -- the Step Functions loop ----------------------------------------------------------------

    def step(self, job_id: str) -> StepResult:
        """Poll one job once (a state machine iteration) and say whether to continue and how long to wait."""
        job = self._store.get(job_id)
        if job is None:
            return StepResult(job_id, "missing", True, 0)
        if job.status in IN_FLIGHT or job.status == Status.RECEIVED:
            try:
                self.poll_job(job)
            except VlmRunRateLimitedError as exc:
                return StepResult(job_id, job.status.value, False, max(1, int(exc.retry_after)) + self.backoff(0))
            except VlmRunError as exc:
                # Transient trouble at VLM Run: the loop waits and tries again; the deadline still applies.
                logger.warning("poll failed; will retry", extra={"job_id": job_id, "error": str(exc)})
                self._store.reschedule(job_id, self._store.now() + self.backoff(job.poll_count), error=str(exc))
        fresh = self._store.get(job_id) or job
        terminal = fresh.status not in IN_FLIGHT and fresh.status != Status.RECEIVED
        wait = max(1, (fresh.next_poll_at or 0) - self._store.now()) if not terminal else 0
        return StepResult(job_id, fresh.status.value, terminal, wait)

    def record_failure(self, job_id: str, error: str, cause: str) -> StepResult:
        """The state machine's Catch: polling itself broke, so fail the job with the reason."""
        self._store.transition(
            job_id,
            Status.FAILED,
            set_fields={"error": f"polling failed: {error}: {cause}"[:2000]},
            remove_fields=("submit_started_at",),
        )
        job = self._store.get(job_id)
        return StepResult(job_id, job.status.value if job else "missing", True, 0)
