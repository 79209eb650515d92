"""The submit claim: the job row as the lock that lets one ``POST /agent/execute`` be in flight per job.

The verbs of the protocol in :mod:`vlmwatch.flows.submit`, as conditional writes on the job row
(OPEN → CLAIMED → SUBMITTED | AMBIGUOUS | OPEN). Every claim state stays in the in-flight index, so the
sweeper finds a claim whose holder died.
"""

from __future__ import annotations

from vlmwatch.adapters.jobstore import JobStore, Written
from vlmwatch.core.lifecycle import Status


class SubmitClaims:
    """Claim verbs on the job table (see the protocol in :mod:`vlmwatch.flows.submit`)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def claim(self, job_id: str, lease_seconds: int) -> int | None:
        """Take the right to call ``POST /agent/execute`` for this job; returns the attempt number.

        Only an unclaimed ``received`` job can be claimed, so at most one request is in flight per job.
        The claim stays in the in-flight index, due when the lease ends: if the claimer dies mid-submit
        the sweeper finds the claim expired and treats the attempt as ambiguous.
        """
        store = self._store
        now = store.now()
        update = store.schedule(store.update(), job_id, now + lease_seconds)
        update.set("submit_started_at", now).set("updated_at", now).increment("attempts")
        update.when_equals("status", Status.RECEIVED.value).when_absent("submit_started_at")
        written = store.write(job_id, update, returning=True)
        return int(written.attributes["attempts"]) if written else None

    def release(self, job_id: str, *, retry_at: int, error: str | None = None, attempt: int | None = None) -> Written:
        """Give the claim back after a failure that provably created nothing (429, no connection, auth).

        The job stays ``received`` and in the index, due again at ``retry_at``: work waits, never fails.
        With ``attempt``, only that attempt's claim is released (a late caller cannot free a newer claim).
        """
        store = self._store
        update = store.schedule(store.update(), job_id, retry_at).set("updated_at", store.now())
        update.remove("submit_started_at").when_equals("status", Status.RECEIVED.value)
        if error:
            update.set("error", error)
        if attempt is not None:
            update.when_equals("attempts", attempt)
        return store.write(job_id, update)

    def mark_ambiguous(
        self, job_id: str, attempt: int, error: str, retry_at: int, *, input_ref: str | None = None
    ) -> Written:
        """Record that ``attempt`` may have created an execution; the job waits for evidence until ``retry_at``.

        The claim is kept (nobody else may submit) and the attempt is listed on the row, so an extra
        execution it made is an orphan on record, never an unexplained duplicate. ``input_ref``: the
        fingerprint of the input reference the attempt sent (evidence, where VLM Run echoes inputs).
        """
        store = self._store
        update = store.schedule(store.update(), job_id, retry_at).set("error", error).set("updated_at", store.now())
        update.append("ambiguous_attempts", [attempt]).when_equals("status", Status.RECEIVED.value)
        if input_ref:
            update.append("ambiguous_inputs", [f"{attempt}:{input_ref}"])
        update.when_present("submit_started_at").when_equals("attempts", attempt)
        return store.write(job_id, update.when_not_listed("ambiguous_attempts", attempt))

    def note_ambiguous(self, job_id: str, attempt: int) -> Written:
        """Put ``attempt`` on the row's record of ambiguous attempts, whatever state the job is in now
        (it moved on, e.g. adopted another attempt's execution, while this one was in flight)."""
        update = self._store.update().append("ambiguous_attempts", [attempt])
        return self._store.write(job_id, update.when_not_listed("ambiguous_attempts", attempt))

    def mark_submitted(
        self,
        job_id: str,
        execution_id: str,
        remote_status: str,
        *,
        next_poll_at: int,
        deadline_at: int,
        downtime_mark: int | None = None,
    ) -> Written:
        """``received`` → ``submitted`` with the execution that belongs to this job (conditional).

        ``downtime_mark``: the circuit breaker's total downtime now; the deadline moves by what it adds later.
        """
        store = self._store
        fields = {
            "execution_id": execution_id,
            "remote_status": remote_status,
            "submitted_at": store.now(),
            "next_poll_at": next_poll_at,
            "deadline_at": deadline_at,
            "poll_shard": store.shard(job_id),
        }
        if downtime_mark is not None:
            fields["downtime_mark"] = downtime_mark
        return store.transition(
            job_id, Status.SUBMITTED, set_fields=fields, remove_fields=("submit_started_at", "error")
        )
