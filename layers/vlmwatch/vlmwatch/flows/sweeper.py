"""The scheduled run: poll every due in-flight job and move on every job stuck on the way.

Due jobs are in-flight ones to poll, and every job stuck on the way: submits deferred by a 429, claims
whose submitter died, ambiguous submits whose evidence window is over, and finished jobs still
undelivered after the delivery grace. In stepfunctions mode an in-flight job's ``next_poll_at`` is its
state machine's next poll plus ``SWEEP_OVERDUE_SECONDS``: it comes due here only when its own state
machine is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.slots import InFlightSlots
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED, IN_FLIGHT, REMOTE_KNOWN, Status
from vlmwatch.core.settings import Settings
from vlmwatch.flows import pacing
from vlmwatch.flows.submit import Submitter
from vlmwatch.flows.tracking import Tracker

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.models import Execution
    from vlmwatch.flows.delivery import Deliverer

logger = logging.getLogger(__name__)


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


class Sweeper:
    """One scheduled run of the poller, which is also the sweeper.

    Args:
        settings: concurrency, claim and list-poll settings.
        store: the job table.
        tracker: polls and applies (the code path every way of tracking shares).
        vlmrun: zero-argument callable returning the VLM Run client (the list poll).
        submitter: the submit protocol (deferred, crashed and ambiguous submits are moved on by it).
        pressure: the process's shared 429 back-pressure.
        deliverer: zero-argument callable returning the deliverer (the sweeper redelivers with it).
        slots: the cap on executions in flight, recounted from the in-flight index every few minutes.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        tracker: Tracker,
        vlmrun: Callable[[], VlmRunClient],
        submitter: Submitter,
        pressure: Backpressure,
        deliverer: Callable[[], Deliverer] | None = None,
        slots: InFlightSlots | None = None,
    ) -> None:
        self._slots = slots
        self._settings = settings
        self._store = store
        self._tracker = tracker
        self._vlmrun = vlmrun
        self._submitter = submitter
        self._pressure = pressure
        self._deliverer = deliverer

    def run(self) -> PollSummary:
        """Claim every due job (up to the limit) and move each on, with bounded concurrency."""
        now = self._store.now()
        summary = PollSummary()
        if self._slots is not None:
            self._slots.recount(self._count_in_flight)
        jobs = [j for j in self._store.due(self._due_by(now), self._settings.poller_max_jobs) if self._due(j, now)]
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
            summary.changed += result in ("changed", "finished", "timed_out")
            summary.finished += result == "finished"
            summary.timed_out += result == "timed_out"
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

    def _due_by(self, now: int) -> int:
        """The last second of the budget's current window (with a budget), else now.

        Work the budget put off waits for "the next window, spread over its first half" (so the functions
        that put it off do not all come back at once). This run is the one that takes it in that window:
        without looking ahead it would wait for the next run, and a minute's budget would go unused.
        """
        if not self._settings.requests_per_minute:
            return now
        window = self._settings.budget_window_seconds
        return (now // window + 1) * window - 1

    @staticmethod
    def _due(job: Job, now: int) -> bool:
        """Due now, or put off by the budget to later in this window (a waiting submit or delivery)."""
        if (job.next_poll_at or 0) <= now:
            return True
        waiting = (job.last_poll_error or "").startswith(("waiting", "delivery waiting"))
        return waiting and (job.status == Status.RECEIVED or job.status in FINISHED)

    def _count_in_flight(self) -> int:
        """Executions that may be running: jobs in flight, and claims whose POST may have made one."""
        assert self._slots is not None  # only called by the slots' own recount
        return self._slots.count_executing(IN_FLIGHT, self._settings.poll_shards)

    def _still_running(self, jobs: list[Job]) -> dict[str, str]:
        """With many jobs due, one list request instead of one GET each.

        A status that is not an end is taken from the list (the job is rescheduled, no GET). An end is taken
        too when the listed record is complete (the list answers the same execution records as a GET by id:
        a completed one with its response, a failed one with its error): at a small plan's rate the GET would
        be a quarter of a file's requests. A job the list does not show, or shows ended without its
        response or error, is polled by id as usual. Returns what happened to each job handled here.
        """
        polling = [j for j in jobs if j.status in IN_FLIGHT and j.execution_id]
        threshold = self._settings.list_poll_min_jobs
        if threshold and self._settings.requests_per_minute:
            # Under a request budget a list is never worse than two GETs: every request is a file's share.
            threshold = min(threshold, 2)
        if not threshold or len(polling) < threshold or self._pressure.admit("poll") is not None:
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
            if execution is None or execution.status not in REMOTE_KNOWN or not _complete(execution):
                continue
            try:
                handled[job.job_id] = self._tracker.apply(job, execution)
            except Exception:  # the job is polled by id instead
                logger.exception("applying a listed status failed", extra={"job_id": job.job_id})
        return handled

    def _move_safely(self, job: Job) -> str:
        try:
            if job.status == Status.RECEIVED:
                return str(self._submitter.advance(job))
            if job.status in FINISHED:
                return self._redeliver(job)
            if job.status not in IN_FLIGHT:
                return "finished-already"
            if pacing.hold(self._pressure, self._store, job.job_id, "poll"):
                return "deferred"  # a 429 just now, or the shared request budget is spent
            return self._tracker.poll_job(job)
        except VlmRunRateLimitedError as exc:
            pacing.defer(self._pressure, self._store, job.job_id, exc)
            return "deferred"
        except Exception as exc:  # one bad job must not stop the others; it is recorded and retried
            logger.exception("sweep step failed", extra={"job_id": job.job_id})
            now = self._store.now()
            self._store.reschedule(
                job.job_id, now + self._tracker.next_delay(job, now), error=f"{type(exc).__name__}: {exc}"
            )
            return "error"

    def _redeliver(self, job: Job) -> str:
        """A finished job still undelivered after the grace: its stream record was lost or kept failing."""
        if self._deliverer is None:
            return "finished-already"
        logger.warning("delivering a job the stream did not", extra={"job_id": job.job_id, "status": job.status})
        self._deliverer().deliver(job.job_id)
        return "redelivered"


def _complete(execution: Execution) -> bool:
    """Whether a listed execution says all a GET by id would: still running, or ended with what delivery needs."""
    if not execution.has_ended:
        return True
    if execution.status == "completed":
        return execution.response is not None
    return execution.status == "cancelled" or bool(execution.error)
