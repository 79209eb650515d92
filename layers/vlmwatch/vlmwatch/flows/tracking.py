"""Tracking: learn an execution's status and fold it into the job row.

Used by all three ways of learning of a change (scheduled poller, Step Functions loop, webhook):
each calls :meth:`Tracker.poll_job` or :meth:`Tracker.apply`, which end in the same conditional
:meth:`JobStore.transition`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from vlmwatch.adapters.breaker import CircuitBreaker
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.slots import InFlightSlots
from vlmwatch.core.errors import VlmRunRejectedError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED, IN_FLIGHT, REMOTE_KNOWN, Status, local_status
from vlmwatch.core.schedule import PollSchedule
from vlmwatch.core.settings import Settings

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.models import Execution

logger = logging.getLogger(__name__)

# Largest execution kept on the job row for delivery (a DynamoDB item holds 400 KB in all).
SNAPSHOT_MAX_BYTES = 64 * 1024
USAGE_MAX_BYTES = 4 * 1024


class Tracker:
    """Polls executions and applies what it learns.

    Args:
        settings: backoff, deadline and concurrency settings.
        store: the job table.
        vlmrun: zero-argument callable returning the VLM Run client.
        breaker: the account's circuit breaker (deadlines move by the time it was open), or None.
        slots: the cap on executions in flight: a job that leaves flight gives its slot back.
        rng: jitter source, injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        vlmrun: Callable[[], VlmRunClient],
        *,
        breaker: CircuitBreaker | None = None,
        slots: InFlightSlots | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._breaker = breaker
        self._slots = slots
        self._store = store
        self._vlmrun = vlmrun
        self._rng = rng or random.Random()
        self._schedule = PollSchedule(
            first=settings.first_poll_seconds, cap=settings.poll_cap_seconds, age_factor=settings.poll_age_factor
        )

    def next_delay(self, job: Job, now: int) -> int:
        """Seconds until a job's next poll (see :class:`~vlmwatch.core.schedule.PollSchedule`)."""
        return self._schedule.delay(now - (job.submitted_at or job.created_at), self._rng)

    def next_poll_at(self, job: Job, now: int) -> int:
        """The row's ``next_poll_at`` for a job polled now (plus the sweeper's margin in stepfunctions mode)."""
        return now + self.next_delay(job, now) + self._settings.sweep_overdue_seconds

    def deadline(self, job: Job) -> int:
        """The job's deadline, moved by the time the circuit breaker was open since it started: a job is
        never timed out for an outage (or an empty account) it sat out."""
        assert job.deadline_at is not None
        moved = self._breaker.downtime_since(job.downtime_mark) if self._breaker is not None else 0
        return job.deadline_at + moved

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
                    set_fields={"error": f"VLM Run has no execution {job.execution_id}: {exc.message}"},
                    count_poll=True,
                )
                return self._left_flight("finished") if moved else "stale"
            raise
        # The deadline is checked after this last look: a job that finished at VLM Run is never "timed out".
        return self.apply(job, execution)

    def time_out(self, job: Job, remote_status: str | None = None) -> str:
        last = remote_status or job.remote_status or "none"
        note = "" if last in REMOTE_KNOWN or last == "none" else " (a status vlmwatch does not know)"
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
        return self._left_flight("timed_out") if moved else "stale"

    def apply(self, job: Job, execution: Execution, *, count_poll: bool = True) -> str:
        """Fold an execution's state into the job row (conditional: never backwards)."""
        now = self._store.now()
        remote = execution.status
        target = local_status(remote, job.status)
        fields: dict[str, object] = {"remote_status": remote}
        if execution.usage is not None:
            # As JSON text: DynamoDB rejects Python floats, and usage is informational only.
            usage = execution.usage.model_dump_json(exclude_none=True)
            if len(usage) <= USAGE_MAX_BYTES:
                fields["usage"] = usage
            # ...and as numbers, for what the work costs (`vlmwatch usage`, the monthly budget).
            if execution.usage.credits_used is not None:
                fields["credits_used"] = Decimal(str(execution.usage.credits_used))
            if execution.usage.elements_processed is not None:
                fields["elements_processed"] = execution.usage.elements_processed
        if target == Status.COMPLETED:
            # Keep what we just fetched, so delivery need not spend another request on it (if it fits).
            snapshot = execution.model_dump_json()
            if len(snapshot.encode()) <= SNAPSHOT_MAX_BYTES:
                fields["execution_snapshot"] = snapshot
        elif remote == "cancelled":
            fields["error"] = f"the execution {execution.id} was cancelled at VLM Run"
        elif target == Status.FAILED:
            fields["error"] = execution.error_message()
        next_poll_at = 0
        if target not in FINISHED:
            if job.deadline_at is not None and now >= self.deadline(job):
                return self.time_out(job, remote)
            next_poll_at = fields["next_poll_at"] = self.next_poll_at(job, now)
        moved = target != job.status and self._store.transition(
            job.job_id, target, set_fields=fields, count_poll=count_poll
        )
        if not moved:
            current = moved.current if moved is not False else self._store.get(job.job_id)
            if current is not None and current.status in IN_FLIGHT and target not in FINISHED:
                # Same status again (or an unknown one): keep the job scheduled and the remote status current.
                self._store.reschedule(job.job_id, next_poll_at, count_poll=count_poll, remote_status=remote)
                if current.status == target:
                    return "unchanged"
            logger.info(
                "stale status ignored",
                extra={"job_id": job.job_id, "remote": remote, "current": getattr(current, "status", None)},
            )
            return "stale"
        return self._left_flight("finished") if target in FINISHED else "changed"

    def _left_flight(self, result: str) -> str:
        """The job just left flight (this process moved it): its execution no longer counts against MaxInFlight."""
        if self._slots is not None:
            self._slots.give_back()
        return result
