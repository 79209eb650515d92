"""Evidence of which execution is a job's: a signed callback, or an echoed input. Nothing is adopted without it.

A callback signed by VLM Run to the URL one submit attempt sent carries the job id, the attempt and our
token (:mod:`vlmwatch.flows.webhooks`). And the API's agent-execution docs show an execution echoing the
``inputs`` it was created with. The input reference one attempt sent (its presigned URL, its uploaded file id) is
unique to that job, so an execution echoing exactly it (its fingerprint is on the row, see
:func:`vlmwatch.flows.request.sent_fingerprint`) is as strong as a signed callback. Where the API echoes
nothing, nothing is found and the submit protocol goes on as without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch.core.schedule import Backoff
from vlmwatch.flows import pacing
from vlmwatch.flows.request import echoed_fingerprint

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.models import Execution

logger = logging.getLogger(__name__)

# How far back to look: executions are listed newest first, and an ambiguous attempt is recent.
PAGES = 2
PAGE_SIZE = 50
# How far VLM Run's clock and ours may disagree: an execution created further outside its attempt's claim
# window was not created by that attempt, whatever evidence is offered for it.
CLOCK_SKEW_SECONDS = 120


class EchoLookup:
    """Finds the execution that echoes one of a job's ambiguous attempts' inputs."""

    def __init__(
        self, store: JobStore, vlmrun: Callable[[], VlmRunClient], pressure: Backpressure, retry: Backoff
    ) -> None:
        self._store = store
        self._vlmrun = vlmrun
        self._pressure = pressure
        self._retry = retry

    def find(self, job: Job, *, plausible: Callable[[Execution], bool]) -> Execution | Literal["deferred"] | None:
        """The matching execution; "deferred" when VLM Run could not be asked now (the job waits on its
        row: submitting blind could make a duplicate); None when nothing echoes the job's inputs."""
        # Only attempts since the last `vlmwatch retry`: an older attempt's execution has ended already (in
        # upload mode every attempt sends the same file id), and is never this run's result.
        wanted = {
            ref.split(":", 1)[1]
            for ref in job.ambiguous_inputs
            if ":" in ref and ref.split(":", 1)[0].isdigit() and int(ref.split(":", 1)[0]) > job.retried_at_attempt
        }
        if not wanted:
            return None
        if pacing.hold(self._pressure, self._store, job.job_id, "poll"):
            return "deferred"
        try:
            for page in range(PAGES):
                executions = self._vlmrun().list_executions(skip=page * PAGE_SIZE, limit=PAGE_SIZE)
                for execution in executions:
                    known = execution.id in job.previous_execution_ids or execution.id in job.orphan_execution_ids
                    if not known and echoed_fingerprint(execution.inputs) in wanted and plausible(execution):
                        return execution
                if len(executions) < PAGE_SIZE:
                    break
        except VlmRunRateLimitedError as exc:
            pacing.defer(self._pressure, self._store, job.job_id, exc)
            return "deferred"
        except VlmRunError as exc:
            retry_at = self._store.now() + int(self._retry.delay(job.attempts))
            self._store.reschedule(job.job_id, retry_at, error=f"looking for an echoed input: {exc}")
            return "deferred"
        return None


def plausible(job: Job, execution: Execution) -> bool:
    """Defence in depth behind the evidence: never adopt an execution of another agent."""
    route = job.route
    return not (route and route.agent and execution.name and execution.name != route.agent)


def claim_window(job: Job, attempt: int | None, now: int) -> tuple[int, int]:
    """When the execution of ``attempt`` (None: any attempt since the job was created) can have been
    created, in epoch seconds, with :data:`CLOCK_SKEW_SECONDS` either side.

    The current attempt's claim began at ``submit_started_at``; an earlier attempt's ended before it. Where
    the row no longer says when an attempt began (its claim was released), the job's creation bounds it.
    """
    started = job.submit_started_at
    if attempt is None:
        return job.created_at - CLOCK_SKEW_SECONDS, now + CLOCK_SKEW_SECONDS
    current = attempt >= job.attempts
    start = started if (current and started is not None) else job.created_at
    end = now if (current or started is None) else started
    return start - CLOCK_SKEW_SECONDS, end + CLOCK_SKEW_SECONDS


def created_epoch(execution: Execution) -> float | None:
    created = execution.created_at
    if created is None:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)  # the API's timestamps are UTC
    return created.timestamp()


def echo_contradicts(job: Job, execution: Execution, attempt: int | None) -> bool:
    """The execution echoes a session or an input this job's attempt did not send (another job, another
    deployment on the same account and secret, another file, another upload)."""
    metadata = (execution.model_extra or {}).get("metadata")
    session = metadata.get("session_id") if isinstance(metadata, dict) else None
    if session is not None and session != job.job_id:
        return True  # every request carries its job id as metadata.session_id
    inputs = execution.inputs
    if not isinstance(inputs, dict) or inputs.get("file") is None:
        return False  # nothing echoed: nothing to contradict
    echoed = inputs["file"]
    sent = {
        ref.split(":", 1)[1]
        for ref in job.ambiguous_inputs
        if ":" in ref and (attempt is None or ref.split(":", 1)[0] == str(attempt))
    }
    if sent and echoed_fingerprint(inputs) not in sent:
        return True
    if isinstance(echoed, dict) and echoed.get("file_id") and job.input_file_id:
        return bool(echoed["file_id"] != job.input_file_id)
    if isinstance(echoed, str) and echoed.startswith(("https://", "http://")):
        # A presigned GET of this job's object names its bucket and key (path- or virtual-hosted style).
        parts = urlsplit(echoed)
        path, host = unquote(parts.path), parts.hostname or ""
        in_bucket = host.startswith(f"{job.bucket}.") or path.startswith(f"/{job.bucket}/")
        return not (in_bucket and path.endswith("/" + job.key))
    return False


class Evidence:
    """Adopts an execution for a job on evidence, through the submit protocol's ``record_started``.

    Args:
        store: the job table.
        record_started: ``received`` → ``submitted`` with this execution (False when the job moved on).
        echo: finds echoed inputs.
    """

    def __init__(self, store: JobStore, record_started: Callable[[Job, Execution], bool], echo: EchoLookup) -> None:
        self._store = store
        self._record_started = record_started
        self._echo = echo

    def refusal(self, job: Job, execution: Execution, attempt: int | None) -> str | None:
        """Why ``execution`` cannot be this job's (attempt's), whatever the evidence says; None: it can be.

        Evidence can be replayed: a genuine signed body of one job sent to another job's callback URL carries
        a valid signature and a valid token. So an execution is never adopted when another job tracks it or
        recorded it (an orphan, or an execution it had before a retry), when it was created outside the
        attempt's claim window, or when it echoes an input the job never sent.
        """
        if not plausible(job, execution):
            return "another agent's execution"
        created = created_epoch(execution)
        if created is None:
            return "the execution has no creation time to check against the claim"
        start, end = claim_window(job, attempt, self._store.now())
        if not start <= created <= end:
            return "the execution was created outside the attempt's claim window"
        if echo_contradicts(job, execution, attempt):
            return "the execution echoes an input this job did not send"
        other = self.other_owner(job.job_id, execution.id)
        return other[1] if other is not None else None

    def other_owner(self, job_id: str, execution_id: str) -> tuple[str, str] | None:
        """(the other job, why) when another job tracks ``execution_id`` or recorded it (an orphan, or an
        execution it had before a retry: its mark, one GetItem, adapters/execution_owners.py); None otherwise."""
        owner = self._store.find_by_execution(execution_id)
        if owner is not None:
            return (owner.job_id, "another job tracks this execution") if owner.job_id != job_id else None
        recorded_by = self._store.owners.owner(execution_id)
        if recorded_by is not None and recorded_by != job_id:
            return recorded_by, "another job recorded this execution (an orphan or an earlier execution of it)"
        return None

    def adopt(self, job_id: str, execution: Execution, attempt: int) -> str:
        """A signed callback for ``attempt`` of this job named ``execution``: it is ours, if nothing refutes it.

        Returns "adopted", "tracked" (it is the execution already tracked), "orphan", or "refused" (it
        cannot be this attempt's: nothing is recorded, see :meth:`refusal`).
        """
        job = self._store.get(job_id)
        if job is None:
            return "unknown"
        if job.execution_id == execution.id:
            return "tracked"
        refused = self.refusal(job, execution, attempt)
        if refused is not None:
            logger.warning(
                "evidence refused", extra={"job_id": job_id, "execution_id": execution.id, "reason": refused}
            )
            return "refused"
        # Attempts up to retried_at_attempt belong to executions that ended before a `vlmwatch retry`.
        fresh_attempt = job.retried_at_attempt < attempt <= job.attempts
        if job.status == Status.RECEIVED and fresh_attempt:
            if self._record_started(job, execution):
                logger.info("execution adopted on evidence", extra={"job_id": job_id, "execution_id": execution.id})
                return "adopted"
            job = self._store.get(job_id) or job
        if job.execution_id == execution.id:
            return "tracked"
        self._store.add_orphan(job_id, execution.id)
        logger.warning("orphan execution recorded", extra={"job_id": job_id, "execution_id": execution.id})
        return "orphan"

    def adopt_by_echo(self, job: Job) -> Literal["submitted", "deferred", "duplicate"] | None:
        """Adopt the execution that echoes one of the job's ambiguous attempts' exact input.

        None when nothing echoes it (submit again, as without this); "deferred" when VLM Run could not be
        asked now; "duplicate" when the job moved on meanwhile (the execution is on record there).
        """
        found = self._echo.find(job, plausible=lambda execution: self.refusal(job, execution, None) is None)
        if found is None or found == "deferred":
            return found
        if self._record_started(job, found):
            logger.info("execution adopted on echoed input", extra={"job_id": job.job_id, "execution_id": found.id})
            return "submitted"
        return "duplicate"
