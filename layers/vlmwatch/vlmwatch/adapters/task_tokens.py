"""stepfunctions + webhooks: the task token of a job's waiting state machine, kept on the job row.

AwaitCallback hands its token to PollOnce, which keeps it here while the job is in flight. Whatever then
moves the job out of flight drops it in the same write (:meth:`JobStore.transition`), so the table's
stream record of that transition carries it, in its old image, to the release (CompleteFunction).
"""

from __future__ import annotations

from vlmwatch.adapters.jobstore import TASK_TOKEN_FIELD, JobStore, Written
from vlmwatch.core.lifecycle import IN_FLIGHT


class TaskTokens:
    """The one write of a waiting execution's token on the job table."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def keep(self, job_id: str, token: str) -> Written:
        """Keep ``token`` on the job's row while the job is in flight.

        Falsy when the job already left flight (or is gone): the caller releases the token itself. The
        row's ``updated_at`` is left alone, so the ByStatus index is not written for this.
        """
        update = self._store.update().set(TASK_TOKEN_FIELD, token)
        return self._store.write(job_id, update.when_in("status", sorted(s.value for s in IN_FLIGHT)))
