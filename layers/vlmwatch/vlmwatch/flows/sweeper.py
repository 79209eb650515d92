"""The scheduled run: poll due in-flight jobs and move on every job stuck on the way, as far as the request
budget goes.

Due jobs are in-flight ones to poll, and every job stuck on the way: submits deferred by a 429, claims
whose submitter died, ambiguous submits whose evidence window is over, and finished jobs still
undelivered after the delivery grace. In stepfunctions mode an in-flight job's ``next_poll_at`` is its
state machine's next poll plus ``SWEEP_OVERDUE_SECONDS``: it comes due here only when its own state
machine is gone.

A run is sized by the deployment's request budget (``REQUESTS_PER_MINUTE``), counted in requests, not jobs:
one executions-list request answers for many jobs, and a poll that finds an execution ended sets off its
delivery (the artifact list and a download, sent by CompleteFunction within seconds), which the run leaves
room for. Spending the whole minute on status polls would only move the deliveries to the next minute.

It reads due jobs a page (``POLLER_MAX_JOBS``) at a time: first the work the budget put off to this window
(deliveries and submits), then the oldest due first; in a page, finished jobs first (a document is one step
away; a failed one costs no request), then polls, then submits. Of each page it claims only the jobs whose
requests fit what is left of the window, and it finishes every job it claimed: what does not fit stays due,
unclaimed, for the next run. It stops when the window's share is used; when a request is refused (another
function spent the window, VLM Run said 429, the breaker is open); when it has run one budget window (the
next scheduled run takes over: the function runs one at a time); or when the function's remaining time runs
short. The budget rows stay the hard limit (every request takes from them before it is sent): this only
decides how much to claim. Without a budget a run takes one page, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
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

# What delivering a finished document asks VLM Run: the artifact list and one download (a typical document;
# one with more artifacts waits for the next window for the rest, one with none leaves the room unused).
DELIVERY_REQUESTS = 2
# What starting an execution asks: the POST; in upload mode the files API's grant and check before it.
START_REQUESTS = {"url": 1, "upload": 3}
# Results of a job's step that sent a status request (a GET by id) and learned its status.
_POLLED = frozenset({"changed", "unchanged", "stale", "finished", "timed_out", "error"})


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
    pages: int = 0
    # Requests this run counted against the budget: its own, and the deliveries its polls set off.
    requests: int = 0
    # Why the run ended: done (nothing more due), budget (the window's share is used), refused (a request
    # was held back), interval (it ran one budget window), time (the function's timeout is near), one-page
    # (no budget).
    stopped: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, job_id: str, result: str, *, listed: bool = False) -> None:
        """Count what happened to one job (``listed``: its status came from the executions list)."""
        self.outcomes[job_id] = result
        self.polled += listed or result not in ("deferred", "redelivered", "submitted", "waiting")
        self.changed += result in ("changed", "finished", "timed_out", "submitted", "adopted")
        self.finished += result == "finished"
        self.timed_out += result == "timed_out"
        self.errors += result == "error"
        self.submitted += result == "submitted"
        self.redelivered += result == "redelivered"
        self.rate_limited |= result == "deferred"


@dataclass
class _Run:
    """One run's state across its pages (the sweeper itself serves every run of its process): its time, and
    its share of the request budget in requests, what it spends and what the deliveries its polls set off will.

    ``time_left`` is the function's remaining seconds (None: only the budget window bounds the run)."""

    per_window: int | None  # the budget's requests per window; None: no budget
    window_seconds: int
    input_mode: str
    clock: Callable[[], int]  # the job table's clock (the budget's windows are counted on it)
    time_left: Callable[[], float] | None = None
    window: int = -1
    spent: int = 0  # requests counted in ``window``
    seen: set[str] = field(default_factory=set)  # jobs this run took already
    submits: bool = True  # False once a submit was put off: the others would be too
    list_polls: bool = True  # False once a list answered for too few jobs to be worth its request
    slowest_page: float = 0.0
    _started: float = field(default_factory=time.monotonic)
    _left_at_start: float = 0.0

    def __post_init__(self) -> None:
        if self.time_left is not None:
            self._left_at_start = self.time_left()

    def elapsed(self) -> float:
        """Seconds since the run started (the function's own clock when it has one)."""
        if self.time_left is not None:
            return self._left_at_start - self.time_left()
        return time.monotonic() - self._started

    def out_of_time(self, interval: int, margin: int) -> str:
        """Why no further page may start now ("" if one may). The next page, allowed twice the time of the
        slowest so far, must end within ``interval`` of the run's start and ``margin`` before the timeout."""
        ahead = 2 * self.slowest_page
        if self.elapsed() + ahead > interval:
            return "interval"
        if self.time_left is not None and self.time_left() - ahead < margin:
            return "time"
        return ""

    def left(self) -> int | None:
        """Requests this run may still plan in the budget's current window (None: no budget). A new window
        starts at its whole share: what other functions spend in it shows as refused requests (the run ends)."""
        if self.per_window is None:
            return None
        window = self.clock() // self.window_seconds
        if window != self.window:
            self.window, self.spent = window, 0
        return self.per_window - self.spent

    def fit(self, jobs: list[Job], cap: int | None) -> list[Job]:
        """The first jobs whose requests fit what is left of the window (without a budget: ``cap`` jobs)."""
        left = self.left()
        take: list[Job] = []
        planned = 0
        for job in jobs:
            need = self.need(job)
            if (left is not None and planned + need > left) or (cap is not None and len(take) >= cap):
                break
            take.append(job)
            planned += need
        return take

    def need(self, job: Job) -> int:
        """The requests a job's step may ask of VLM Run, the delivery it sets off included (for a poll, the
        most it may: :meth:`settle` counts what it found)."""
        if job.status == Status.COMPLETED:
            # Without the execution kept on the row, delivery fetches it first.
            return DELIVERY_REQUESTS + (0 if job.execution_snapshot else 1)
        if job.status in FINISHED:
            return 0  # an error document: nothing to fetch
        if job.status in IN_FLIGHT:
            return 1 + DELIVERY_REQUESTS
        if job.status == Status.RECEIVED:
            return START_REQUESTS[self.input_mode]
        return 0

    def settle(self, moved: list[tuple[Job, str]], listed: set[str], list_sent: bool) -> int:
        """Count what a page spent in the window: the list request, a GET for each job it did not answer for
        (unless held back), a delivery for each poll that found its execution ended, the plan for the rest."""
        spent = int(list_sent)
        for job, result in moved:
            if job.status in IN_FLIGHT:
                spent += (job.job_id not in listed and result in _POLLED) + DELIVERY_REQUESTS * (result == "finished")
            else:
                spent += self.need(job)
                self.submits &= not (job.status == Status.RECEIVED and result == "deferred")
        self.left()  # a page that ran into the next window counts there
        self.spent += spent
        return spent


class Sweeper:
    """One scheduled run of the poller, which is also the sweeper.

    Args:
        settings: concurrency, claim, page, budget and list-poll settings.
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

    def run(self, time_left: Callable[[], float] | None = None) -> PollSummary:
        """Claim due jobs a page at a time, as far as the request budget and the time allow, and move each on
        with bounded concurrency.

        Args:
            time_left: seconds before the function times out (the Lambda context's remaining time), or None:
                then only the run's budget window bounds it.
        """
        now = self._store.now()
        summary = PollSummary()
        if self._slots is not None:
            self._slots.recount(self._count_in_flight)
        cfg = self._settings
        rpm, window = cfg.requests_per_minute, cfg.budget_window_seconds
        run = _Run(rpm or None, window, cfg.input_mode, self._store.now, time_left)
        # No budget: one page for the whole run (nothing says how many requests VLM Run would take).
        cap = None if rpm else cfg.poller_max_jobs
        pages = self._pages(now, run.seen)
        with ThreadPoolExecutor(max_workers=cfg.poller_concurrency) as pool:
            while not summary.stopped:
                if summary.pages and (late := run.out_of_time(window, cfg.poller_margin_seconds)):
                    summary.stopped = late
                    break
                page_started = run.elapsed()
                page = next(pages, None)
                if page is None:
                    summary.stopped = "done"
                    break
                summary.pages += 1
                summary.stopped = self._page(page, run, summary, pool, cap)
                run.slowest_page = max(run.slowest_page, run.elapsed() - page_started)
        return summary

    def _pages(self, now: int, seen: set[str]) -> Iterator[list[Job]]:
        """Due jobs, a page of the in-flight index at a time: first what was put off to this window (the
        jobs in its slice that are not in flight: deliveries and submits the budget deferred, which would
        otherwise wait behind every older poll), then every due job, oldest first."""
        size = self._settings.poller_max_jobs
        due_by = self._due_by(now)
        # One page only: the slice also holds the polls due in this window, which come with the rest below.
        fresh = self._store.due(due_by, size, since=now - now % self._settings.budget_window_seconds)
        yield [j for j in fresh if j.status not in IN_FLIGHT and _is_due(j, now)]
        cursor: dict[str, Job] = {}  # per shard, the last job read: pages go on after it
        while True:
            page = self._store.due(due_by, size, after=cursor)
            cursor.update((self._store.shard(j.job_id), j) for j in page)
            yield [j for j in page if j.job_id not in seen and _is_due(j, now)]
            if len(page) < size:
                return

    def _page(self, page: list[Job], run: _Run, summary: PollSummary, pool: ThreadPoolExecutor, cap: int | None) -> str:
        """Claim what of one page fits, move it on and count what it spent; again with the rest of the page
        while what the moves did not spend (polls that found no end) makes room. Returns why the run ends."""
        jobs = sorted(page, key=_priority)  # stable: oldest first within each kind
        summary.due += len(jobs)
        while jobs:
            if not run.submits:
                jobs = [j for j in jobs if j.status != Status.RECEIVED]  # left unclaimed, due for the next run
            take = run.fit(jobs, None if cap is None else cap - summary.claimed)
            if not take:
                break
            jobs = jobs[len(take) :]
            run.seen.update(j.job_id for j in take)
            until = self._store.now() + self._settings.poll_claim_seconds
            claimed = [j for j in take if self._store.reschedule(j.job_id, until, expect_next_poll_at=j.next_poll_at)]
            summary.claimed += len(claimed)
            if self._move(claimed, run, summary, pool):
                return "refused"
        if jobs or (cap is not None and summary.claimed >= cap):
            return "budget" if cap is None else "one-page"
        return ""

    def _move(self, claimed: list[Job], run: _Run, summary: PollSummary, pool: ThreadPoolExecutor) -> bool:
        """Move every claimed job on (the list poll first) and count what it spent. Returns whether a request
        was held back (the window is spent, a 429, the breaker): the run ends."""
        if not claimed:
            return False
        listed, list_sent, refused = self._still_running(claimed, run)
        rest = [j for j in claimed if j.job_id not in listed]
        results = listed | dict(zip((j.job_id for j in rest), pool.map(self._move_safely, rest), strict=True))
        for job in claimed:
            summary.add(job.job_id, results[job.job_id], listed=job.job_id in listed)
            refused |= job.status in IN_FLIGHT and results[job.job_id] == "deferred"
        moved = [(j, results[j.job_id]) for j in claimed]
        summary.requests += run.settle(moved, set(listed), list_sent)
        return refused

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

    def _count_in_flight(self) -> int:
        """Executions that may be running: jobs in flight, and claims whose POST may have made one."""
        assert self._slots is not None  # only called by the slots' own recount
        return self._slots.count_executing(IN_FLIGHT, self._settings.poll_shards)

    def _still_running(self, jobs: list[Job], run: _Run) -> tuple[dict[str, str], bool, bool]:
        """With many jobs due, one list request instead of one GET each.

        A status that is not an end is taken from the list (the job is rescheduled, no GET). An end is taken
        too when the listed record is complete (the list answers the same execution records as a GET by id:
        a completed one with its response, a failed one with its error): at a small plan's rate the GET would
        be a quarter of a file's requests. A job the list does not show, or shows ended without its
        response or error, is polled by id as usual.

        Returns what happened to each job handled here, whether the list request was sent, and whether it
        was held back (the budget, a 429 or the breaker said no).
        """
        polling = [j for j in jobs if j.status in IN_FLIGHT and j.execution_id]
        threshold = self._settings.list_poll_min_jobs
        if threshold and self._settings.requests_per_minute:
            # Under a request budget a list is never worse than two GETs: every request is a file's share.
            threshold = min(threshold, 2)
        if not run.list_polls or not threshold or len(polling) < threshold:
            return {}, False, False
        if self._pressure.admit("poll") is not None:
            return {}, False, True
        try:
            # Newest first: the jobs in flight are among the most recent executions.
            executions = self._vlmrun().list_executions(limit=min(100, max(len(polling) * 2, 20)))
        except VlmRunRateLimitedError as exc:
            self._pressure.block(exc.retry_after)  # every job of this run then waits, with no more requests
            return {}, True, True
        except VlmRunError as exc:
            logger.info("list poll failed; polling one by one", extra={"error": str(exc)})
            return {}, True, False
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
        if threshold and len(handled) < threshold:
            # The due jobs are older than the newest executions (a backlog): GETs for the rest of this run.
            run.list_polls = False
        return handled, True, False

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


def _priority(job: Job) -> int:
    """Finished jobs first (a document is one request or two away, a failed one none), then polls, then
    submits (new work waits for the work already started)."""
    if job.status in IN_FLIGHT:
        return 1
    return 2 if job.status == Status.RECEIVED else 0


def _is_due(job: Job, now: int) -> bool:
    """Due now, or put off by the budget to later in this window (a waiting submit or delivery)."""
    if (job.next_poll_at or 0) <= now:
        return True
    waiting = (job.last_poll_error or "").startswith(("waiting", "delivery waiting"))
    return waiting and (job.status == Status.RECEIVED or job.status in FINISHED)
