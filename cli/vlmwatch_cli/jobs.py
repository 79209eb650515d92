"""The job verbs: list, retry and cancel, without the terminal (each testable against moto).

Reads go through :class:`~vlmwatch.adapters.job_queries.JobQueries` (index queries, ``--limit`` applied in
the query); writes through the job store's conditional writes, whose conditions are the lifecycle's
rules (:mod:`vlmwatch.core.lifecycle`): a job the pipeline moved meanwhile is never moved back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.job_queries import JobQueries, merge_newest
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED, IN_FLIGHT, RETRYABLE, Status
from vlmwatch_cli.errors import UsageError
from vlmwatch_cli.refs import Resolver

if TYPE_CHECKING:
    from vlmwatch_cli.target import Target

STATUS_NAMES = tuple(s.value for s in Status)
CANCELLED = "cancelled by operator"
# The submit flow's words when it gives up for the account's or the service's sake (not the file's):
# a retry may well work once the account is back (flows/submit.py, _give_up).
_GAVE_UP = "could not start a VLM Run execution within"
_OUTCOME_PAGE = 100
# Keys-only ByStatus: without --since, "delivered with this outcome" looks at this many newest delivered rows.
OUTCOME_LOOKBACK = 1000


def parse_statuses(value: str | None) -> set[Status]:
    """``failed,timed_out`` as statuses, checked against the lifecycle's names.

    Raises:
        UsageError: a name that is not a status.
    """
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in STATUS_NAMES]
    if unknown:
        raise UsageError(f"unknown status {', '.join(map(repr, unknown))}: one of {', '.join(STATUS_NAMES)}")
    return {Status(n) for n in names}


def _matches(job: Job, wanted: set[Status]) -> bool:
    # A delivered job is also listed under its outcome ("failed" lists failures already delivered).
    return not wanted or job.status in wanted or (job.status == Status.DELIVERED and job.outcome in wanted)


def list_jobs(
    queries: JobQueries,
    statuses: Iterable[Status] = (),
    *,
    since: int | None = None,
    limit: int | None = None,
    notes: list[str] | None = None,
) -> list[Job]:
    """Jobs in ``statuses`` (all when empty) changed since ``since``, most recently changed first, at
    most ``limit``: one ``ByStatus`` query per status, merged, then the rows shown read by key
    (eventually consistent, like the index that chose them).

    An outcome (completed, failed, timed_out) also matches delivered jobs with that outcome (see
    :func:`_delivered_with_outcome`); ``notes`` receives what the operator should know about a partial look.
    """
    wanted = set(statuses)
    outcomes = wanted & FINISHED if Status.DELIVERED not in wanted else set()
    if outcomes and queries.has_outcome_index:
        # One ByOutcome query per outcome (finished or delivered alike), one ByStatus query per other status.
        lists = [queries.in_outcome(o, since=since, limit=limit) for o in sorted(outcomes)]
        lists += [queries.in_status(s, since=since, limit=limit) for s in sorted(wanted - outcomes)]
        entries = merge_newest(lists, limit)
        return [j for j in queries.rows((e.job_id for e in entries), consistent=False) if _matches(j, wanted)]
    entries = queries.newest(wanted or set(Status), since=since, limit=limit)
    jobs = [j for j in queries.rows((e.job_id for e in entries), consistent=False) if _matches(j, wanted)]
    if outcomes:
        # Only delivered rows newer than the oldest direct match shown could still make the cut.
        cutoff = jobs[limit - 1].updated_at if limit is not None and len(jobs) >= limit else None
        jobs += _delivered_with_outcome(queries, outcomes, since=since, limit=limit, cutoff=cutoff, notes=notes)
    jobs.sort(key=lambda j: (j.updated_at, j.job_id), reverse=True)
    return jobs if limit is None else jobs[:limit]


def _delivered_with_outcome(
    queries: JobQueries,
    outcomes: set[Status],
    *,
    since: int | None,
    limit: int | None,
    cutoff: int | None,
    notes: list[str] | None,
) -> list[Job]:
    """Delivered jobs whose outcome is one of ``outcomes``, newest first, at most ``limit``, none older
    than ``cutoff``: without an outcome index, each delivered row is read to know its outcome. Without
    ``since`` only the newest ``OUTCOME_LOOKBACK`` are, and ``notes`` says so.
    """
    found: list[Job] = []
    looked = 0
    lookback = None if since is not None else OUTCOME_LOOKBACK
    pages = queries.iter_status(Status.DELIVERED, since=since, limit=lookback, page=_OUTCOME_PAGE)
    if cutoff is not None:
        pages = itertools.takewhile(lambda e: e.at >= cutoff, pages)
    for chunk in _chunks(pages, _OUTCOME_PAGE):
        looked += len(chunk)
        found += [j for j in queries.rows((e.job_id for e in chunk), consistent=False) if j.outcome in outcomes]
        if limit is not None and len(found) >= limit:
            return found
    if lookback is not None and looked >= lookback and notes is not None:
        notes.append(
            f"delivered jobs: only the newest {lookback:,} were looked at for their outcome; "
            "use --since to look further back"
        )
    return found


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def is_permanent(job: Job) -> bool:
    """A failure the same request would meet again: VLM Run rejected it (a 4xx: bad input, unknown agent,
    above ``MaxObjectBytes``) before any execution existed. Failures of an execution, time-outs and the
    submit flow giving up for the account's sake (outage, no credits) are not permanent."""
    if (job.outcome or job.status) != Status.FAILED or job.execution_id:
        return False
    return not (job.error or "").startswith(_GAVE_UP)


@dataclass(frozen=True)
class RetryItem:
    ref: str
    job: Job | None
    action: str  # "retry"; "skip": a named job that cannot be retried; "leave": left out of a bulk retry
    reason: str


def retry_plan(
    target: Target,
    refs: Iterable[str] = (),
    statuses: Iterable[Status] = (),
    *,
    since: int | None = None,
    limit: int | None = None,
    include_permanent: bool = False,
    notes: list[str] | None = None,
) -> list[RetryItem]:
    """What ``retry`` would do, job by job, without writing anything.

    Named jobs are retried whatever their failure (the operator chose them); jobs picked by status skip
    permanent failures unless ``include_permanent``.

    Raises:
        UsageError: a status that cannot be retried.
    """
    wanted = set(statuses)
    if wanted - RETRYABLE:
        raise UsageError(f"only failed and timed_out jobs can be retried, not {', '.join(sorted(wanted - RETRYABLE))}")
    resolver = Resolver(target.queries, target.input_bucket)
    items = [_judge(ref, resolver.find(ref), picked=False) for ref in refs]
    if wanted:
        # The bulk form reads more rows than it keeps when permanent failures are skipped: those are
        # listed too, so the operator sees what was left out, and --limit counts jobs to reopen.
        picked = list_jobs(
            target.queries, wanted, since=since, limit=None if not include_permanent else limit, notes=notes
        )
        kept = 0
        for job in picked:
            item = _judge(job.job_id, job, picked=True, include_permanent=include_permanent)
            if item.action == "retry":
                if limit is not None and kept >= limit:
                    continue
                kept += 1
            items.append(item)
    return items


def _judge(ref: str, job: Job | None, *, picked: bool, include_permanent: bool = True) -> RetryItem:
    item = _verdict(ref, job, picked=picked, include_permanent=include_permanent)
    # Picked by status, a job not retried was left out on purpose; named, it is work that failed.
    return RetryItem(item.ref, item.job, "leave", item.reason) if picked and item.action == "skip" else item


def _verdict(ref: str, job: Job | None, *, picked: bool, include_permanent: bool) -> RetryItem:
    if job is None:
        return RetryItem(ref, None, "skip", "no such job")
    outcome = job.outcome or job.status
    if job.status in IN_FLIGHT or job.status == Status.RECEIVED:
        return RetryItem(ref, job, "skip", f"in flight ({job.status.value}): not retried")
    if job.status == Status.SKIPPED:
        return RetryItem(ref, job, "skip", f"skipped on purpose ({job.skip_reason}): nothing to retry")
    if outcome not in RETRYABLE:
        return RetryItem(ref, job, "skip", f"{outcome.value}: only failed or timed-out jobs are retried")
    if picked and not include_permanent and is_permanent(job):
        return RetryItem(ref, job, "skip", f"permanent failure ({job.error}): add --include-permanent")
    return RetryItem(ref, job, "retry", f"was {outcome.value}")


@dataclass(frozen=True)
class Done:
    ref: str
    done: bool
    reason: str


def retry_apply(store: JobStore, items: Iterable[RetryItem]) -> list[Done]:
    """Reopen the planned jobs; each reopen is conditional on the row as read (two concurrent retries make
    one new execution, never two, and never one beside an execution still running)."""
    out = []
    for item in items:
        if item.action != "retry" or item.job is None:
            out.append(Done(item.ref, False, item.reason))
        elif store.reopen(item.job, due_at=store.now()):
            out.append(Done(item.ref, True, f"reopened ({item.reason}); the sweeper submits it"))
        else:
            out.append(Done(item.ref, False, "changed meanwhile (another retry?): not retried"))
    return out


def cancel(store: JobStore, job: Job, reason: str | None = None) -> Done:
    """Mark a job that has not finished as failed, "cancelled by operator".

    VLM Run's API has no endpoint to cancel an execution (its SDK cancels only fine-tuning jobs), so an
    execution already started is left to run: its result is never delivered, because the job has left
    flight (the lifecycle lets no later poll or callback move a failed job). The write is the job store's
    conditional transition: it loses, and nothing changes, if the job finished meanwhile. Its error
    document is then written like any failure's.
    """
    ref = job.job_id
    if job.status not in IN_FLIGHT and job.status != Status.RECEIVED:
        outcome = (job.outcome or job.status).value
        return Done(ref, False, f"already {outcome}: nothing to cancel")
    message = CANCELLED + (f": {reason}" if reason else "")
    written = store.transition(
        job.job_id, Status.FAILED, set_fields={"error": message}, remove_fields=("submit_started_at",)
    )
    if not written:
        now = written.current
        return Done(ref, False, f"it moved on meanwhile (now {now.status.value if now else 'gone'}): not cancelled")
    if job.execution_id:
        return Done(
            ref,
            True,
            f"marked failed ({message}); VLM Run has no cancel for executions, so execution "
            f"{job.execution_id} was left alone (it may still run and cost credits; its result is not delivered)",
        )
    return Done(ref, True, f"marked failed ({message}); no execution had been started")
