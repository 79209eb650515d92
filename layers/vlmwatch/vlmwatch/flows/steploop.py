"""stepfunctions mode: the steps of a job's state machine (``statemachine/poller.asl.json``).

Without webhooks an execution loops Wait → PollOnce → Choice on the job's backoff. With webhooks it waits
in AwaitCallback on a task token kept on the job's row (:meth:`StepLoop.await_callback`); the job's
leaving flight releases it (:meth:`PollerStateMachine.release`, from the job table's stream), so a job whose
callback comes costs one state, and only a callback that never comes costs a poll at the token's timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.statemachine import PollerStateMachine
from vlmwatch.adapters.task_tokens import TaskTokens
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.lifecycle import IN_FLIGHT
from vlmwatch.core.settings import Settings
from vlmwatch.flows.tracking import Tracker

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one iteration tells the state machine: stop (``done``: the job is no longer in flight), or
    wait ``wait_seconds`` and poll again: on a callback's task token (``await_callback``, webhooks on),
    or on a plain Wait."""

    job_id: str
    status: str
    done: bool
    wait_seconds: int
    await_callback: bool = False


class StepLoop:
    """The state machine's PollOnce step and its Catch."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        tracker: Tracker,
        pressure: Backpressure,
        machine: PollerStateMachine | None = None,
    ) -> None:
        self._settings = settings
        self._machine = machine
        self._tokens = TaskTokens(store)
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
                return self._wait(job_id, job.status.value, wait_until)
            try:
                self._tracker.poll_job(job)
            except VlmRunRateLimitedError as exc:
                retry_at = self._pressure.rate_limited(exc.retry_after)
                return self._wait(job_id, job.status.value, retry_at)
            except VlmRunError as exc:
                # Transient trouble at VLM Run: the loop waits and tries again; the deadline still applies.
                logger.warning("poll failed; will retry", extra={"job_id": job_id, "error": str(exc)})
                now = self._store.now()
                self._store.reschedule(job_id, self._tracker.next_poll_at(job, now), error=str(exc))
        fresh = self._store.get(job_id) or job
        if fresh.status not in IN_FLIGHT:
            return StepResult(job_id, fresh.status.value, True, 0)
        # The sweeper's margin is in next_poll_at, not ours to wait.
        return self._wait(job_id, fresh.status.value, (fresh.next_poll_at or 0) - self._settings.sweep_overdue_seconds)

    def _wait(self, job_id: str, status: str, until: int) -> StepResult:
        wait = max(1, until - self._store.now())
        return StepResult(job_id, status, False, wait, await_callback=self._settings.webhooks_enabled)

    def await_callback(self, job_id: str, token: str) -> None:
        """AwaitCallback's task: keep the token on the job's row for whatever moves the job out of flight.

        A job that already left flight (its callback came first) or is gone is released here and now.
        What this returns, the state machine ignores: it waits for the token (or its timeout).
        """
        written = self._tokens.keep(job_id, token)
        if not written:
            current = written.current
            if self._machine is not None:
                self._machine.release(job_id, token, current.status.value if current else "missing")

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
