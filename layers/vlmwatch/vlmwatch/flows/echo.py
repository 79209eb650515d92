"""Evidence from echoed inputs: the execution an ambiguous submit made, found by the exact input it sent.

The API has no idempotency key, but its agent-execution docs show an execution echoing the ``inputs`` it
was created with. The input reference one attempt sent (its presigned URL, its uploaded file id) is
unique to that job, so an execution echoing exactly it (its fingerprint is on the row, see
:func:`vlmwatch.flows.request.sent_fingerprint`) is as strong as a signed callback. Where the API echoes
nothing, nothing is found and the submit protocol goes on as without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.job import Job
from vlmwatch.core.schedule import Backoff
from vlmwatch.flows import pacing
from vlmwatch.flows.request import echoed_fingerprint

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.models import Execution

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
        wanted = {ref.split(":", 1)[1] for ref in job.ambiguous_inputs if ":" in ref}
        if not wanted:
            return None
        if pacing.hold(self._pressure, self._store, job.job_id, "poll"):
            return "deferred"
        try:
            for page in range(PAGES):
                executions = self._vlmrun().list_executions(skip=page * PAGE_SIZE, limit=PAGE_SIZE)
                for execution in executions:
                    if echoed_fingerprint(execution.inputs) in wanted and plausible(execution):
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
