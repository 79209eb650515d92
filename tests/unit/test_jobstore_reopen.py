"""`vlmwatch retry` reopens a failed job whatever its attempt count, once per read."""

from __future__ import annotations

from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch.runtime import wiring


def test_a_job_that_failed_before_any_submit_can_be_retried_once(wire, clock):
    wire()
    store = wiring.job_store()
    now = int(clock())
    # What a job that could not start within SUBMIT_DEADLINE_SECONDS leaves (breaker open the whole time).
    job = Job(
        job_id="a" * 40, bucket="b", key="k.txt", status=Status.FAILED, outcome=Status.FAILED,
        attempts=0, error="could not start a VLM Run execution within 86400 s (0 attempt(s))",
        created_at=now, updated_at=now,
    )  # fmt: skip
    assert store.create(job)
    read = store.get(job.job_id)
    assert read is not None and read.attempts == 0

    assert store.reopen(read, due_at=now)
    reopened = store.get(job.job_id)
    assert reopened is not None and reopened.status == Status.RECEIVED and reopened.retries == 1
    assert not store.reopen(read, due_at=now)  # the same read cannot reopen it twice
