"""The two dead-letter queues: see what waits, send it back to work, or drop one message.

Reading a queue hides what was read for ``PEEK_SECONDS``; every message not acted on is made visible
again at once, so listing (or a dry run, or a declined confirmation) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.jobstore import UNBOUNDED
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED
from vlmwatch_cli.errors import UsageError

if TYPE_CHECKING:
    from vlmwatch_cli.target import Target

QUEUES = {"ingest": "dlq_url", "deliveries": "failed_deliveries_url"}
PEEK_SECONDS = 60
UNDELIVERED_LIMIT = 100_000


def queue_url(target: Target, queue: str) -> str:
    if queue not in QUEUES:
        raise UsageError(f"unknown queue {queue!r}: one of {', '.join(QUEUES)}")
    return str(getattr(target.need(QUEUES[queue]), QUEUES[queue]))


def sent_at(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("SentTimestamp", "0")) // 1000


@dataclass
class Batch:
    """Messages read (and hidden) from one queue; :meth:`release` makes the untouched ones visible again."""

    sqs: Any
    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, target: Target, queue: str, *, since: int | None = None, limit: int | None = None) -> Batch:
        """Up to ``limit`` messages sent at or after ``since``, oldest first; the others are released."""
        batch = cls(target.client("sqs"), queue_url(target, queue))
        others: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            got = batch.sqs.receive_message(
                QueueUrl=batch.url, MaxNumberOfMessages=10, VisibilityTimeout=PEEK_SECONDS, AttributeNames=["All"]
            ).get("Messages", [])
            new = [m for m in got if m["MessageId"] not in seen]
            if not new:
                break
            seen.update(m["MessageId"] for m in new)
            for message in new:
                keep = since is None or sent_at(message) >= since
                (batch.messages if keep else others).append(message)
        batch.messages.sort(key=sent_at)
        if limit is not None:
            others += batch.messages[limit:]
            batch.messages = batch.messages[:limit]
        Batch(batch.sqs, batch.url, others).release()
        return batch

    def release(self) -> None:
        for message in self.messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )

    def delete(self, message: dict[str, Any]) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])


def undelivered(target: Target, *, since: int | None = None, limit: int | None = None) -> list[Job]:
    """Finished jobs not yet delivered (the sweeper's sparse index, not the table's history)."""
    jobs = [j for j in target.store.due(UNBOUNDED, limit=UNDELIVERED_LIMIT) if j.status in FINISHED]
    if since is not None:
        jobs = [j for j in jobs if j.updated_at >= since]
    jobs.sort(key=lambda j: j.updated_at)
    return jobs if limit is None else jobs[:limit]


@dataclass
class RedrivePlan:
    batch: Batch
    jobs: list[Job]

    @property
    def size(self) -> int:
        return len(self.batch.messages) + len(self.jobs)


def redrive_plan(target: Target, queue: str, *, since: int | None, limit: int | None) -> RedrivePlan:
    """What ``dlq redrive`` would touch. ``deliveries``: a parked stream record says only that delivery
    kept failing; the job table says which jobs, so the finished, undelivered jobs are redriven too."""
    if queue == "ingest":
        target.need("ingest_queue_url")
    batch = Batch.read(target, queue, since=since, limit=limit)
    jobs = undelivered(target, since=since, limit=limit) if queue == "deliveries" else []
    return RedrivePlan(batch, jobs)


def redrive_apply(target: Target, queue: str, plan: RedrivePlan) -> int:
    """Send the planned messages back to work (ingest: to the ingest queue, which is idempotent per object
    version; deliveries: the jobs are made due now, so the next sweeper run delivers them); returns how
    many messages were handled."""
    store = target.store if plan.jobs else None
    for job in plan.jobs:
        assert store is not None
        store.reschedule(job.job_id, store.now())
    for message in plan.batch.messages:
        if queue == "ingest":
            plan.batch.sqs.send_message(QueueUrl=target.ingest_queue_url, MessageBody=message["Body"])
        plan.batch.delete(message)
    return len(plan.batch.messages)


def drop(target: Target, queue: str, message_id: str) -> dict[str, Any] | None:
    """Delete one message (by id, or a unique prefix of it) for good; None when it is not there.

    Raises:
        UsageError: the prefix matches several messages.
    """
    batch = Batch.read(target, queue)
    matching = [m for m in batch.messages if m["MessageId"].startswith(message_id)]
    try:
        if len(matching) > 1:
            ids = ", ".join(m["MessageId"] for m in matching)
            raise UsageError(f"{message_id!r} matches {len(matching)} messages: {ids}. Give more of the id.")
        if matching:
            batch.delete(matching[0])
            batch.messages.remove(matching[0])
            return matching[0]
        return None
    finally:
        batch.release()
