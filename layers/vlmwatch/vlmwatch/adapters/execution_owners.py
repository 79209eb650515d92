"""Which job an execution it no longer tracks belongs to: a small control row per recorded execution.

A job tracks one execution (``execution_id``, found through the ``ByExecutionId`` index), but it also
records others: orphans (``orphan_execution_ids``: extra executions an ambiguous attempt made) and, after a
``vlmwatch retry``, the ones it had before (``previous_execution_ids``). Those lists are inside the row, where
no index reaches them, so evidence replayed from one job to another (issue 19: a genuine signed body of job
B's orphan sent to job A's callback URL) could not be checked against them without a scan. Each recorded
execution therefore also gets a row ``job_id = "#exec#<execution_id>"`` naming its job: one GetItem answers
"is this execution another job's?", and only on the adoption path.

The row carries no ``status``, ``key``, ``execution_id`` or ``id_prefix``, so it is in no index, and a stream
filter on job statuses never sees it. It expires like a settled job row (``expires_at``, the same TTL): once
gone, the execution is older than that TTL, so it is outside every current attempt's claim window anyway
(:func:`vlmwatch.flows.evidence.claim_window`), which refuses it on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vlmwatch.adapters.dynamo import Update, conditional_update, serialize_item
from vlmwatch.core.job import CONTROL_ROW_PREFIX

MARK_PREFIX = f"{CONTROL_ROW_PREFIX}exec#"
OWNER_FIELD = "owner_job_id"


def mark_id(execution_id: str) -> str:
    return f"{MARK_PREFIX}{execution_id}"


class ExecutionOwners:
    """The ``#exec#<execution_id>`` rows: written when a job records an execution it does not track.

    Args:
        client: a boto3 DynamoDB client.
        table_name: the job table.
        ttl_seconds: how long a mark is kept (the job table's TTL).
        clock: seconds since the epoch.
    """

    def __init__(
        self, client: Any, table_name: str, *, ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_seconds
        self._clock = clock

    def record(self, execution_id: str, job_id: str) -> bool:
        """Mark ``execution_id`` as ``job_id``'s (one UpdateItem, which every function that records executions
        may send). The first job to record an execution keeps it: False when another job already did."""
        update = Update("job_id", create=True).set(OWNER_FIELD, job_id)
        update.set("expires_at", int(self._clock()) + self._ttl_seconds)
        applied, _ = conditional_update(
            self._client, self._table, mark_id(execution_id), update.when_absent_or_equals(OWNER_FIELD, job_id)
        )
        return applied

    def owner(self, execution_id: str) -> str | None:
        """The job that recorded ``execution_id`` as an orphan or an earlier execution, if any (one GetItem)."""
        item = self._client.get_item(
            TableName=self._table,
            Key=serialize_item({"job_id": mark_id(execution_id)}),
            ProjectionExpression="#o",
            ExpressionAttributeNames={"#o": OWNER_FIELD},
            ConsistentRead=True,
        ).get("Item")
        return str(item[OWNER_FIELD]["S"]) if item and OWNER_FIELD in item else None
