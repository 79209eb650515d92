"""The job table: one row per object version, and the only place a job's status changes.

Every status change is a conditional write whose condition lists the statuses it may come from,
so an update that arrives late (a slow poll, a replayed webhook, a redelivered message) loses the
race instead of moving the job backwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, field_validator

from vlmwatch.ddb import deserialize_item, serialize_item
from vlmwatch.redact import MAX_TEXT_CHARS, sanitize
from vlmwatch.routing import Route

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IN_FLIGHT_INDEX = "InFlightByNextPoll"
EXECUTION_INDEX = "ByExecutionId"


class Status(StrEnum):
    RECEIVED = "received"
    SUBMITTED = "submitted"
    ENQUEUED = "enqueued"
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DELIVERED = "delivered"
    SKIPPED = "skipped"


# Statuses of equal rank may replace each other (running <-> paused, enqueued <-> pending);
# a lower rank may never replace a higher one.
RANK: dict[Status, int] = {
    Status.RECEIVED: 0,
    Status.SUBMITTED: 1,
    Status.ENQUEUED: 2,
    Status.PENDING: 2,
    Status.RUNNING: 3,
    Status.PAUSED: 3,
    Status.COMPLETED: 4,
    Status.FAILED: 4,
    Status.TIMED_OUT: 4,
    Status.DELIVERED: 5,
    Status.SKIPPED: 5,
}
IN_FLIGHT = frozenset({Status.SUBMITTED, Status.ENQUEUED, Status.PENDING, Status.RUNNING, Status.PAUSED})
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.TIMED_OUT})
FINAL = frozenset({Status.DELIVERED, Status.SKIPPED})


def allowed_from(target: Status) -> list[Status]:
    """The statuses a job may be in for a write of ``target`` to succeed."""
    rank = RANK[target]
    if rank == RANK[Status.COMPLETED]:
        # A terminal outcome is decided once: completed never turns into timed_out.
        return [s for s in Status if RANK[s] < rank]
    if target == Status.DELIVERED:
        return sorted(TERMINAL)
    if target == Status.SKIPPED:
        return [Status.RECEIVED]
    same_rank_ok = rank in (2, 3)
    return [s for s in Status if RANK[s] < rank or (same_rank_ok and RANK[s] == rank)]


# Remote text (VLM Run's error messages) goes on rows, documents and events: ``bounded`` strips credentials
# (a presigned URL quoted in a fetch error) and bounds the length, so a 500 KB message can never push a
# row past DynamoDB's 400 KB item limit.
MAX_ERROR_CHARS = MAX_TEXT_CHARS
bounded = sanitize


def job_id_for(bucket: str, key: str, version: str) -> str:
    """Stable id for one object version; also a valid Step Functions execution name (<= 80 chars)."""
    return hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()[:40]


class Job(BaseModel):
    """A row of the job table."""

    model_config = {"extra": "ignore"}

    job_id: str
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    content_type: str | None = None
    route: Route | None = None
    status: Status
    outcome: Status | None = None
    remote_status: str | None = None
    execution_id: str | None = None
    attempts: int = 0
    poll_count: int = 0
    next_poll_at: int | None = None
    deadline_at: int | None = None
    submit_started_at: int | None = None
    error: str | None = None
    skip_reason: str | None = None
    result_uri: str | None = None
    error_uri: str | None = None
    usage: dict[str, Any] | None = None
    execution_snapshot: str | None = None  # the completed execution as JSON, until delivered
    # Submit attempts whose outcome was never known (timeout after send, 5xx, a crash while claimed):
    # each may have created an execution that no evidence ties to this job (a possible orphan).
    ambiguous_attempts: list[int] = Field(default_factory=list)
    # Executions known to belong to this job that are not the one delivered (late evidence).
    orphan_execution_ids: list[str] = Field(default_factory=list)
    input_file_id: str | None = None  # upload mode: the uploaded copy, reused by every submit attempt
    delivery_attempts: int = 0
    # `vlmwatch retry`: how often this job was reopened, the attempt count when it last was (callbacks for
    # attempts up to it belong to an execution that already ended), and the executions it had before.
    retries: int = 0
    retried_at_attempt: int = 0
    previous_execution_ids: list[str] = Field(default_factory=list)
    delivery_error: str | None = None
    last_poll_error: str | None = None
    created_at: int
    updated_at: int
    submitted_at: int | None = None
    finished_at: int | None = None
    delivered_at: int | None = None

    @field_validator("route", "usage", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
        return cls.model_validate({k: _plain(v) for k, v in item.items()})

    def to_item(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        data = {k: v for k, v in data.items() if v != []}  # list attributes appear when first appended to
        # Nested JSON (schemas with floats) is stored as a string: DynamoDB wants Decimals otherwise.
        for name in ("route", "usage"):
            if name in data:
                data[name] = json.dumps(data[name], separators=(",", ":"), sort_keys=True)
        return data

    @property
    def source_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class JobStore:
    """Conditional reads and writes on the job table.

    Args:
        client: a boto3 DynamoDB client. A client, not a ``Table`` resource: the poller shares the
            store across threads, and boto3 clients are thread-safe where resources are not.
        table_name: the job table.
        shards: how many partitions the in-flight index is spread over.
        delivery_grace_seconds: how long after a terminal transition the sweeper steps in if the
            job is still not delivered.
        clock: seconds since the epoch; injected for tests.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        shards: int = 1,
        ttl_days: int = 30,
        delivery_grace_seconds: int = 300,
        clock: Any = time.time,
    ) -> None:
        self._delivery_grace = delivery_grace_seconds
        self._client = client
        self._table = table_name
        self._shards = shards
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    def _shard(self, job_id: str) -> str:
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

    def due(self, now: int, limit: int) -> list[Job]:
        """Jobs whose next poll is due, oldest first. Reads only the sparse in-flight index."""
        jobs: list[Job] = []
        for shard in range(self._shards):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": IN_FLIGHT_INDEX,
                "KeyConditionExpression": "poll_shard = :s AND next_poll_at <= :now",
                "ExpressionAttributeValues": serialize_item({":s": f"s{shard}", ":now": now}),
                "Limit": limit,
            }
            while len(jobs) < limit:
                page = self._client.query(**kwargs)
                jobs.extend(Job.from_item(deserialize_item(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        jobs.sort(key=lambda j: j.next_poll_at or 0)
        return jobs[:limit]

    # -- writes --------------------------------------------------------------------------------

    def create(self, job: Job, *, due_at: int | None = None) -> bool:
        """Insert a new job; False if a job with this id already exists (a duplicate event).

        A ``received`` job goes into the in-flight index at once (due at ``due_at``): if the process
        that created it dies before it is submitted, the sweeper still finds it.
        """
        item = job.to_item()
        if job.status in FINAL:
            item["expires_at"] = job.updated_at + self._ttl_seconds
        elif due_at is not None:
            item["poll_shard"] = self._shard(job.job_id)
            item["next_poll_at"] = due_at
        try:
            self._client.put_item(
                TableName=self._table, Item=serialize_item(item), ConditionExpression="attribute_not_exists(job_id)"
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def claim_submit(self, job_id: str, lease_seconds: int) -> int | None:
        """Take the right to call ``POST /agent/execute`` for this job; returns the attempt number.

        Only an unclaimed ``received`` job can be claimed, so at most one request is in flight per job.
        The claim stays in the in-flight index, due when the lease ends: if the claimer dies mid-submit
        the sweeper finds the claim expired and treats the attempt as ambiguous.
        """
        now = self.now()
        attrs = self._apply(
            job_id,
            "SET submit_started_at = :now, updated_at = :now, next_poll_at = :lease, poll_shard = :shard, "
            "attempts = if_not_exists(attempts, :zero) + :one",
            {
                ":now": now,
                ":lease": now + lease_seconds,
                ":shard": self._shard(job_id),
                ":zero": 0,
                ":one": 1,
                ":received": Status.RECEIVED.value,
            },
            "#status = :received AND attribute_not_exists(submit_started_at)",
            returning=True,
        )
        return None if attrs is None else int(attrs["attempts"])

    def release_submit(
        self, job_id: str, *, retry_at: int, error: str | None = None, attempt: int | None = None
    ) -> bool:
        """Give the claim back after a failure that provably created nothing (429, no connection, auth).

        The job stays ``received`` and in the index, due again at ``retry_at``: work waits, never fails.
        With ``attempt``, only that attempt's claim is released (a late caller cannot free a newer claim).
        """
        values: dict[str, Any] = {
            ":now": self.now(),
            ":received": Status.RECEIVED.value,
            ":at": retry_at,
            ":shard": self._shard(job_id),
        }
        expr = "REMOVE submit_started_at SET updated_at = :now, next_poll_at = :at, poll_shard = :shard"
        if error:
            expr += ", #error = :error"
            values[":error"] = bounded(error)
        cond = "#status = :received"
        if attempt is not None:
            cond += " AND attempts = :attempt"
            values[":attempt"] = attempt
        return self._update(job_id, expr, values, cond)

    def mark_ambiguous(self, job_id: str, attempt: int, error: str, retry_at: int) -> bool:
        """Record that ``attempt`` may have created an execution; the job waits for evidence until ``retry_at``.

        The claim is kept (nobody else may submit) and the attempt is listed on the row, so an extra
        execution it made is an orphan on record, never an unexplained duplicate.
        """
        return self._update(
            job_id,
            "SET #error = :error, next_poll_at = :at, poll_shard = :shard, updated_at = :now, "
            "ambiguous_attempts = list_append(if_not_exists(ambiguous_attempts, :empty), :attempt_list)",
            {
                ":error": bounded(error),
                ":at": retry_at,
                ":shard": self._shard(job_id),
                ":now": self.now(),
                ":received": Status.RECEIVED.value,
                ":attempt": attempt,
                ":attempt_list": [attempt],
                ":empty": [],
            },
            "#status = :received AND attribute_exists(submit_started_at) AND attempts = :attempt "
            "AND NOT contains(ambiguous_attempts, :attempt)",
        )

    def note_ambiguous(self, job_id: str, attempt: int) -> bool:
        """Put ``attempt`` on the row's record of ambiguous attempts, whatever state the job is in now
        (it moved on, e.g. adopted another attempt's execution, while this one was in flight)."""
        return self._update(
            job_id,
            "SET ambiguous_attempts = list_append(if_not_exists(ambiguous_attempts, :empty), :attempt_list)",
            {":attempt": attempt, ":attempt_list": [attempt], ":empty": []},
            "NOT contains(ambiguous_attempts, :attempt)",
            names={},
        )

    def mark_submitted(
        self, job_id: str, execution_id: str, remote_status: str, *, next_poll_at: int, deadline_at: int
    ) -> bool:
        """``received`` → ``submitted`` with the execution that belongs to this job (conditional)."""
        now = self.now()
        return self.transition(
            job_id,
            Status.SUBMITTED,
            set_fields={
                "execution_id": execution_id,
                "remote_status": remote_status,
                "submitted_at": now,
                "next_poll_at": next_poll_at,
                "deadline_at": deadline_at,
                "poll_shard": self._shard(job_id),
            },
            remove_fields=("submit_started_at", "error"),
        )

    def add_orphan(self, job_id: str, execution_id: str) -> bool:
        """Record an execution that belongs to this job but is not the one it tracks (paid for, not delivered)."""
        return self._update(
            job_id,
            "SET orphan_execution_ids = list_append(if_not_exists(orphan_execution_ids, :empty), :ids), "
            "updated_at = :now",
            {":ids": [execution_id], ":empty": [], ":now": self.now(), ":id": execution_id},
            "NOT contains(orphan_execution_ids, :id)",
            names={},
        )

    def set_fields(self, job_id: str, fields: dict[str, Any], *, expect_status: Status | None = None) -> bool:
        """Set plain attributes (no status change), optionally only while the job has ``expect_status``."""
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {f":v{i}": value for i, value in enumerate(fields.values())}
        expr = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        cond = "attribute_exists(job_id)"
        if expect_status is not None:
            cond = "#status = :expect"
            values[":expect"] = expect_status.value
        return self._update(job_id, expr, values, cond, names=names)

    def delivery_failed(self, job_id: str, error: str, retry_at: int) -> bool:
        """A terminal job whose documents could not be written: the sweeper tries again at ``retry_at``."""
        values: dict[str, Any] = {
            ":err": bounded(error),
            ":at": retry_at,
            ":shard": self._shard(job_id),
            ":now": self.now(),
            ":zero": 0,
            ":one": 1,
        }
        for i, status in enumerate(sorted(TERMINAL)):
            values[f":t{i}"] = status.value
        return self._update(
            job_id,
            "SET delivery_error = :err, next_poll_at = :at, poll_shard = :shard, updated_at = :now, "
            "delivery_attempts = if_not_exists(delivery_attempts, :zero) + :one",
            values,
            f"#status IN ({', '.join(f':t{i}' for i in range(len(TERMINAL)))})",
        )

    def reschedule(
        self,
        job_id: str,
        next_poll_at: int,
        *,
        expect_next_poll_at: int | None = None,
        error: str | None = None,
        count_poll: bool = False,
        remote_status: str | None = None,
    ) -> bool:
        """Move a job's next poll; with ``expect_next_poll_at`` this is the poller's claim."""
        values: dict[str, Any] = {":at": next_poll_at, ":now": self.now()}
        expr = "SET next_poll_at = :at, updated_at = :now"
        cond = "attribute_exists(poll_shard)"
        if expect_next_poll_at is not None:
            cond += " AND next_poll_at = :seen"
            values[":seen"] = expect_next_poll_at
        if error is not None:
            expr += ", last_poll_error = :err"
            values[":err"] = bounded(error)
        if remote_status is not None:
            expr += ", remote_status = :remote"
            values[":remote"] = remote_status
        if count_poll:
            expr += ", poll_count = if_not_exists(poll_count, :zero) + :one"
            values.update({":zero": 0, ":one": 1})
        return self._update(job_id, expr, values, cond, names={})

    def transition(
        self,
        job_id: str,
        target: Status,
        *,
        set_fields: dict[str, Any] | None = None,
        remove_fields: tuple[str, ...] = (),
        count_poll: bool = False,
    ) -> bool:
        """Move a job to ``target`` if, and only if, that is not a step backwards.

        Returns False when the condition lost (the job is already as far or further along, or
        gone): a late or duplicate update, which callers treat as a no-op rather than an error.
        """
        now = self.now()
        fields: dict[str, Any] = {**(set_fields or {}), "status": target.value, "updated_at": now}
        removes = list(remove_fields)
        if target in TERMINAL:
            fields.setdefault("finished_at", now)
            fields["outcome"] = target.value
            # Still in the index, due when delivery should long be done: if the stream record is lost
            # (retries exhausted, a crash), the sweeper delivers it. Delivery takes it out of the index.
            fields["next_poll_at"] = now + self._delivery_grace
            fields["poll_shard"] = self._shard(job_id)
        if target in FINAL:
            fields["expires_at"] = now + self._ttl_seconds
            removes += ["poll_shard", "next_poll_at"]
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        expr = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if count_poll:
            expr += ", poll_count = if_not_exists(poll_count, :zero) + :one"
            values.update({":zero": 0, ":one": 1})
        removes = [r for r in dict.fromkeys(removes) if r not in fields]
        if removes:
            # Through placeholders: some attribute names (e.g. "error") may be reserved words.
            names.update({f"#r{i}": name for i, name in enumerate(removes)})
            expr += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        allowed = allowed_from(target)
        for i, status in enumerate(allowed):
            values[f":from{i}"] = status.value
        cond = f"#status IN ({', '.join(f':from{i}' for i in range(len(allowed)))})"
        return self._update(job_id, expr, values, cond, names=names)

    # Outcomes a retry may reopen; everything else is in flight, delivered fine, or skipped on purpose.
    RETRYABLE = (Status.FAILED, Status.TIMED_OUT)

    def reopen(self, job: Job, *, due_at: int) -> bool:
        """Put a failed or timed-out job back to ``received`` (``vlmwatch retry``), due at ``due_at``.

        Conditional on the row being exactly as read (same status and attempts): never while the job is in
        flight, never twice for one read, so a retry can never add an execution to one still running. The
        sweeper then submits it like any deferred job; the execution it had moves to
        ``previous_execution_ids``.
        """
        if not (job.status in self.RETRYABLE or (job.status == Status.DELIVERED and job.outcome in self.RETRYABLE)):
            return False
        now = self.now()
        clear = [
            *("execution_id", "remote_status", "outcome", "error", "finished_at", "delivered_at", "result_uri"),
            *("error_uri", "latest_uri", "submit_started_at", "expires_at", "execution_snapshot", "delivery_error"),
            *("submitted_at", "deadline_at", "usage", "last_poll_error"),
        ]
        names = {f"#c{i}": name for i, name in enumerate(clear)}
        removes = ", ".join(names)
        expr = (
            "SET #status = :received, updated_at = :now, next_poll_at = :due, poll_shard = :shard, "
            "retries = if_not_exists(retries, :zero) + :one, retried_at_attempt = :attempts, "
            "delivery_attempts = :zero, "
            "previous_execution_ids = list_append(if_not_exists(previous_execution_ids, :empty), :previous) "
            f"REMOVE {removes}"
        )
        values = {
            ":received": Status.RECEIVED.value,
            ":now": now,
            ":due": due_at,
            ":shard": self._shard(job.job_id),
            ":zero": 0,
            ":one": 1,
            ":attempts": job.attempts,
            ":empty": [],
            ":previous": [job.execution_id] if job.execution_id else [],
            ":seen": job.status.value,
        }
        same_attempts = "attempts = :attempts" if job.attempts else "attribute_not_exists(attempts)"
        cond = f"#status = :seen AND {same_attempts}"
        return self._update(job.job_id, expr, values, cond, names=names)

    def _update(
        self, job_id: str, expr: str, values: dict[str, Any], cond: str, *, names: dict[str, str] | None = None
    ) -> bool:
        return self._apply(job_id, expr, values, cond, names=names) is not None

    def _apply(
        self,
        job_id: str,
        expr: str,
        values: dict[str, Any],
        cond: str,
        *,
        names: dict[str, str] | None = None,
        returning: bool = False,
    ) -> dict[str, Any] | None:
        """One conditional update; None when the condition lost, else the updated attributes (if asked)."""
        all_names = {**(names or {})}
        if "#status" in cond or "#status" in expr:
            all_names["#status"] = "status"
        if "#error" in expr:
            all_names["#error"] = "error"
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": serialize_item({"job_id": job_id}),
            "UpdateExpression": expr,
            "ConditionExpression": f"attribute_exists(job_id) AND ({cond})",
            "ExpressionAttributeValues": serialize_item(values),
        }
        if all_names:
            kwargs["ExpressionAttributeNames"] = all_names
        if returning:
            kwargs["ReturnValues"] = "UPDATED_NEW"
        try:
            response = self._client.update_item(**kwargs)
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return deserialize_item(response.get("Attributes", {}))


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
