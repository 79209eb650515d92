"""stepfunctions mode: one iteration of a job's state machine (Wait → PollOnce → Choice)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.lifecycle import IN_FLIGHT
from vlmwatch.core.settings import Settings
from vlmwatch.flows.tracking import Tracker

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one iteration tells the state machine: stop (``done``: the job is no longer in flight), or
    wait ``wait_seconds`` and poll again."""

    job_id: str
    status: str
    done: bool
    wait_seconds: int


class StepLoop:
    """The state machine's PollOnce step and its Catch."""

    def __init__(self, settings: Settings, store: JobStore, tracker: Tracker, pressure: Backpressure) -> None:
        self._settings = settings
        self._store = store
        self._tracker = tracker
        self._pressure = pressure

    def step(self, job_id: str) -> StepResult:
        """Poll one job once and say whether to continue and how long to wait."""
        job = self._store.get(job_id)
        if job is None:
            return StepResult(job_id, "missing", True, 0)
        if job.status in IN_FLIGHT:
            wait_until = self._pressure.admit("poll")
            if wait_until is not None:
                return StepResult(job_id, job.status.value, False, max(1, wait_until - self._store.now()))
            try:
                self._tracker.poll_job(job)
            except VlmRunRateLimitedError as exc:
                retry_at = self._pressure.rate_limited(exc.retry_after)
                return StepResult(job_id, job.status.value, False, max(1, retry_at - self._store.now()))
            except VlmRunError as exc:
                # Transient trouble at VLM Run: the loop waits and tries again; the deadline still applies.
                logger.warning("poll failed; will retry", extra={"job_id": job_id, "error": str(exc)})
                now = self._store.now()
                self._store.reschedule(job_id, self._tracker.next_poll_at(job, now), error=str(exc))
        fresh = self._store.get(job_id) or job
        done = fresh.status not in IN_FLIGHT
        due = (fresh.next_poll_at or 0) - self._settings.sweep_overdue_seconds  # the sweeper's margin is not ours
        wait = max(1, due - self._store.now()) if not done else 0
        return StepResult(job_id, fresh.status.value, done, wait)

    def record_failure(self, job_id: str, error: str, cause: str) -> StepResult:
        """The state machine's Catch: this loop gives up, the job does not.

        Polling broke repeatedly (a DynamoDB throttle, a bug): the job's row keeps the reason and stays
        in flight, so the scheduled sweeper takes it over once it is overdue. A job is failed only by
        what VLM Run says, or by its deadline.
        """
        job = self._store.get(job_id)
        if job is not None and job.status in IN_FLIGHT:
            self._store.reschedule(job_id, self._store.now(), error=f"poller state machine stopped: {error}: {cause}")
        fresh = self._store.get(job_id)
        return StepResult(job_id, fresh.status.value if fresh else "missing", True, 0)
