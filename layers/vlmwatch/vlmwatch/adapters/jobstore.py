"""The job table: one row per object version, and the only place a job's status changes.

Every status change is a conditional write whose condition lists the statuses it may come from
(:mod:`vlmwatch.core.lifecycle`), so an update that arrives late (a slow poll, a replayed webhook, a
redelivered message) loses the race instead of moving the job backwards. A write that loses says what
the row holds now (``ReturnValuesOnConditionCheckFailure``): the loser never reads it again.

Every text attribute is sanitised here, on its way to the row (:func:`vlmwatch.core.redact.sanitize`):
callers pass remote text as they got it, and no row can carry a signed URL or outgrow 400 KB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify
from vlmwatch.adapters.dynamo import Update, conditional_update, deserialize_item, serialize_item
from vlmwatch.adapters.execution_owners import ExecutionOwners
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import FINISHED, RETRYABLE, SETTLED, Status, allowed_from
from vlmwatch.core.redact import sanitize

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IN_FLIGHT_INDEX = "InFlightByNextPoll"
UNBOUNDED = 2**53  # "due by the end of time": with JobStore.due, every row of the in-flight index
EXECUTION_INDEX = "ByExecutionId"
# The operator's questions (keys only; see template.yaml): jobs for a key by creation, jobs in a status by update.
KEY_INDEX = "ByKey"
STATUS_INDEX = "ByStatus"
# Short ids (`vlmwatch status ab12cd34`): keys only, hash the id's first hex digits, range the id, so a prefix
# of 4+ digits is one Query (begins_with on job_id). Written once, when the row is created (see create).
ID_PREFIX_INDEX = "ByIdPrefix"
ID_PREFIX_FIELD = "id_prefix"
ID_PREFIX_LENGTH = 4
# The task token of a job's waiting state machine (adapters/task_tokens.py); dropped when the job leaves flight.
TASK_TOKEN_FIELD = "task_token"  # noqa: S105 - an attribute's name, not a secret
# Text attributes and their bounds: remote text is cleaned and cut on its way to the row.
TEXT_LIMITS = {"error": 4000, "last_poll_error": 4000, "delivery_error": 4000, "remote_status": 64}
# What a reopened job forgets: everything about the execution it had and how it ended.
_CLEARED_ON_REOPEN = (
    *("execution_id", "remote_status", "outcome", "error", "finished_at", "delivered_at", "result_uri"),
    *("error_uri", "latest_uri", "submit_started_at", "expires_at", "execution_snapshot", "delivery_error"),
    *("submitted_at", "deadline_at", "usage", "last_poll_error", "credits_used", "elements_processed"),
    *("downtime_mark", "ambiguous_inputs"),
)


@dataclass(frozen=True)
class Written:
    """The result of a conditional write: true when it applied; when it lost, the row as it is now."""

    applied: bool
    attributes: dict[str, Any]

    def __bool__(self) -> bool:
        return self.applied

    @property
    def current(self) -> Job | None:
        """The row that won (a lost write), or None when there is no row (or none came back)."""
        if self.applied or "job_id" not in self.attributes:
            return None
        return Job.from_item(self.attributes)


class JobStore:
    """Conditional reads and writes on the job table.

    Args:
        client: a boto3 DynamoDB client (not a ``Table`` resource: the poller shares the store across
            threads, and boto3 clients are thread-safe where resources are not).
        table_name: the job table. shards: how many partitions the in-flight index is spread over.
        ttl_days: how long a settled row is kept. clock: seconds since the epoch; injected for tests.
        delivery_grace_seconds: how long after a finished transition the sweeper steps in if the job is
            still not delivered.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        shards: int = 1,
        ttl_days: int = 30,
        delivery_grace_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._delivery_grace = delivery_grace_seconds
        self._client = client
        self._table = table_name
        self._shards = shards
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock
        self.owners = ExecutionOwners(client, table_name, ttl_seconds=self._ttl_seconds, clock=clock)

    def now(self) -> int:
        return int(self._clock())

    def shard(self, job_id: str) -> str:
        return f"s{int(job_id[:8], 16) % self._shards}"

    # -- reads ---------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        item = self._client.get_item(
            TableName=self._table, Key=serialize_item({"job_id": job_id}), ConsistentRead=True
        ).get("Item")
        return Job.from_item(deserialize_item(item)) if item else None

    def find_by_execution(self, execution_id: str) -> Job | None:
        items = self._client.query(
            TableName=self._table,
            IndexName=EXECUTION_INDEX,
            KeyConditionExpression="execution_id = :e",
            ExpressionAttributeValues=serialize_item({":e": execution_id}),
            Limit=1,
        ).get("Items", [])
        return self.get(deserialize_item(items[0])["job_id"]) if items else None

    def due(self, now: int, limit: int, *, since: int | None = None, after: dict[str, Job] | None = None) -> list[Job]:
        """Jobs due (from ``since``, if given, to ``now``), oldest first: ``limit`` read per shard, the oldest kept.
        ``after`` pages on: per shard name, the last job a call returned from it (as ``LastEvaluatedKey`` would)."""
        jobs: list[Job] = []
        span = "<= :now" if since is None else "BETWEEN :since AND :now"
        for name in (f"s{shard}" for shard in range(self._shards)):
            values = {":s": name, ":now": now} | ({} if since is None else {":since": since})
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": IN_FLIGHT_INDEX,
                "KeyConditionExpression": f"poll_shard = :s AND next_poll_at {span}",
                "ExpressionAttributeValues": serialize_item(values),
                "Limit": limit,
            }
            if (last := (after or {}).get(name)) is not None:  # its key as read: the index's and the table's
                key = {"job_id": last.job_id, "poll_shard": name, "next_poll_at": last.next_poll_at}
                kwargs["ExclusiveStartKey"] = serialize_item(key)
            first = len(jobs)  # counted per shard: one count for all let a full shard hide the others
            while len(jobs) - first < limit:
                page = self._client.query(**kwargs)
                jobs.extend(Job.from_item(deserialize_item(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        jobs.sort(key=lambda j: j.next_poll_at or 0)  # stable: what is kept of a shard is a prefix of it
        return jobs[:limit]

    # -- writes --------------------------------------------------------------------------------

    def create(self, job: Job, *, due_at: int | None = None) -> Written:
        """Insert a new job; falsy if a job with this id already exists (a duplicate event), and then
        ``current`` is that row, as the lost put returned it (no second read). A ``received`` job goes into the
        in-flight index at once (due at ``due_at``): if its creator dies before submitting, the sweeper finds it.
        """
        item = job.to_item()
        if job.status in SETTLED:
            item["expires_at"] = job.updated_at + self._ttl_seconds
        elif due_at is not None:
            item["poll_shard"] = self.shard(job.job_id)
            item["next_poll_at"] = due_at
        return _put_new(self._client, self._table, item)

    def update(self) -> Update:
        """A new conditional update of one row (see :meth:`write`)."""
        return Update("job_id")

    def schedule(self, update: Update, job_id: str, at: int) -> Update:
        """Keep (or put) the job in the in-flight index, due at ``at``."""
        return update.set("next_poll_at", at).set("poll_shard", self.shard(job_id))

    def write(self, job_id: str, update: Update, *, returning: bool = False) -> Written:
        """Apply ``update`` to the row; text attributes are sanitised and bounded on the way."""
        for name, placeholder in _text_placeholders(update):
            update.values[placeholder] = sanitize(update.values[placeholder], TEXT_LIMITS[name])
        options = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if returning:
            options["ReturnValues"] = "UPDATED_NEW"
        return Written(*conditional_update(self._client, self._table, job_id, update, **options))

    def transition(
        self,
        job_id: str,
        target: Status,
        *,
        set_fields: dict[str, Any] | None = None,
        remove_fields: tuple[str, ...] = (),
        count_poll: bool = False,
        expect: dict[str, Any] | None = None,
    ) -> Written:
        """Move a job to ``target`` if, and only if, that is not a step backwards (and, with ``expect``,
        those attributes still hold those values).

        Falsy when the condition lost (the job is already as far or further along, or gone): a late or
        duplicate update, which callers treat as a no-op rather than an error.
        """
        now = self.now()
        update = self.update().set_all(set_fields or {}).set("status", target.value).set("updated_at", now)
        update.remove(*remove_fields)
        if target in FINISHED:
            if not (set_fields and "finished_at" in set_fields):
                update.set("finished_at", now)
            update.set("outcome", target.value)
            # A waiting state machine's token (adapters/task_tokens.py) has done its job once the job leaves
            # flight: the stream record's old image carries it to the release (CompleteFunction).
            update.remove(TASK_TOKEN_FIELD)
            # Still in the index, due when delivery should long be done: if the stream record is lost
            # (retries exhausted, a crash), the sweeper delivers it. Delivery takes it out of the index.
            self.schedule(update, job_id, now + self._delivery_grace)
        if target in SETTLED:
            update.set("expires_at", now + self._ttl_seconds).remove("poll_shard", "next_poll_at")
        if count_poll:
            update.increment("poll_count")
        for name, value in (expect or {}).items():
            update.when_equals(name, value)
        return self.write(job_id, update.when_in("status", [s.value for s in allowed_from(target)]))

    def set_fields(self, job_id: str, fields: dict[str, Any], *, expect_status: Status | None = None) -> Written:
        """Set plain attributes (no status change), optionally only while the job has ``expect_status``."""
        update = self.update().set_all(fields)
        if expect_status is not None:
            update.when_equals("status", expect_status.value)
        return self.write(job_id, update)

    def reschedule(
        self,
        job_id: str,
        next_poll_at: int,
        *,
        expect_next_poll_at: int | None = None,
        error: str | None = None,
        count_poll: bool = False,
        remote_status: str | None = None,
    ) -> Written:
        """Move a job's next poll; with ``expect_next_poll_at`` this is the poller's claim."""
        update = (
            self.update().set("next_poll_at", next_poll_at).set("updated_at", self.now()).when_present("poll_shard")
        )
        if expect_next_poll_at is not None:
            update.when_equals("next_poll_at", expect_next_poll_at)
        if error is not None:
            update.set("last_poll_error", error)
        if remote_status is not None:
            update.set("remote_status", remote_status)
        if count_poll:
            update.increment("poll_count")
        return self.write(job_id, update)

    def add_orphan(self, job_id: str, execution_id: str) -> Written:
        """Record an execution that belongs to this job but is not the one it tracks (paid for, not delivered),
        marked first as this job's (:mod:`~vlmwatch.adapters.execution_owners`): no other job may adopt it."""
        self.owners.record(execution_id, job_id)
        update = self.update().append("orphan_execution_ids", [execution_id]).set("updated_at", self.now())
        return self.write(job_id, update.when_not_listed("orphan_execution_ids", execution_id))

    def delivery_failed(self, job_id: str, error: str, retry_at: int) -> Written:
        """A finished job whose documents could not be written: the sweeper tries again at ``retry_at``."""
        update = self.update().set("delivery_error", error).set("updated_at", self.now())
        update = self.schedule(update, job_id, retry_at).increment("delivery_attempts")
        return self.write(job_id, update.when_in("status", sorted(s.value for s in FINISHED)))

    def reopen(self, job: Job, *, due_at: int) -> Written:
        """Put a failed or timed-out job back to ``received`` (``vlmwatch retry``), due at ``due_at``.

        Conditional on the row being exactly as read (same status and attempts): never while the job is in
        flight, never twice for one read, so a retry can never add an execution to one still running. The
        sweeper then submits it like any deferred job; the execution it had moves to
        ``previous_execution_ids``.
        """
        if not (job.status in RETRYABLE or (job.status == Status.DELIVERED and job.outcome in RETRYABLE)):
            return Written(False, {})
        update = self.update().set("status", Status.RECEIVED.value).set("updated_at", self.now())
        update = self.schedule(update, job.job_id, due_at).increment("retries")
        update.set("retried_at_attempt", job.attempts).set("delivery_attempts", 0)
        if job.execution_id:  # marked first: from here on only the row's list names it, no index does
            self.owners.record(job.execution_id, job.job_id)
        update.append("previous_execution_ids", [job.execution_id] if job.execution_id else [])
        update.remove(*_CLEARED_ON_REOPEN).when_equals("status", job.status.value)
        # Rows store attempts=0 (a job that gave up before any submit, e.g. while the breaker was open).
        update.when_absent_or_equals("attempts", job.attempts)
        return self.write(job.job_id, update)


def _put_new(client: DynamoDBClient, table: str, item: dict[str, Any]) -> Written:
    """Put a new job row unless its id exists; when it does, the lost put returns that row (``ALL_OLD``).

    Every job row is created here, so here is the only write of its ``id_prefix``: one write to the keys-only
    ``ByIdPrefix`` index per created row (later updates never change ``job_id`` or ``id_prefix``, so DynamoDB
    writes nothing more to that index for them).
    """
    item = item | {ID_PREFIX_FIELD: id_prefix(str(item["job_id"]))}
    try:
        client.put_item(
            TableName=table,
            Item=serialize_item(item),
            ConditionExpression="attribute_not_exists(job_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if classify(exc) == AwsErrorKind.CONDITION_FAILED:
            existing: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return Written(False, deserialize_item(existing))
        raise
    return Written(True, {})


def id_prefix(job_id: str) -> str:
    """The ``ByIdPrefix`` hash key of a job id: its first :data:`ID_PREFIX_LENGTH` hex digits."""
    return job_id[:ID_PREFIX_LENGTH]


def _text_placeholders(update: Update) -> list[tuple[str, str]]:
    """(attribute, value placeholder) for every text attribute an update sets."""
    found = []
    for name in TEXT_LIMITS:
        clause = update.set_clause(name)
        if clause is not None:
            placeholder = clause.rsplit(" = ", 1)[1]
            if isinstance(update.values.get(placeholder), str):
                found.append((name, placeholder))
    return found
