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
from typing import TYPE_CHECKING, Literal

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

    def adopt(self, job_id: str, execution: Execution, attempt: int) -> str:
        """A signed callback for ``attempt`` of this job named ``execution``: it is ours.

        Returns "adopted", "tracked" (it is the execution already tracked) or "orphan".
        """
        job = self._store.get(job_id)
        if job is None:
            return "unknown"
        # Attempts up to retried_at_attempt belong to executions that ended before a `vlmwatch retry`.
        fresh_attempt = job.retried_at_attempt < attempt <= job.attempts
        if job.status == Status.RECEIVED and fresh_attempt and plausible(job, execution):
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
        found = self._echo.find(job, plausible=lambda execution: plausible(job, execution))
        if found is None or found == "deferred":
            return found
        if self._record_started(job, found):
            logger.info("execution adopted on echoed input", extra={"job_id": job.job_id, "execution_id": found.id})
            return "submitted"
        return "duplicate"
