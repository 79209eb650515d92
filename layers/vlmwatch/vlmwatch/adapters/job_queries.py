"""The operator's questions about the job table, answered with index queries instead of table scans.

Keys-only indexes (``template.yaml``) carry the questions; the rows shown are then read by key:

* "jobs for this key": :data:`~vlmwatch.adapters.jobstore.KEY_INDEX` (hash ``key``, range ``created_at``);
* "jobs in status S (changed since T)": :data:`~vlmwatch.adapters.jobstore.STATUS_INDEX` (hash ``status``,
  range ``updated_at``);
* "newest N": one ``ByStatus`` query per status, newest first with ``Limit=N``, merged;
* "the job whose id starts with ab12cd34": :data:`~vlmwatch.adapters.jobstore.ID_PREFIX_INDEX` (hash
  ``id_prefix``, the id's first 4 hex digits; range ``job_id``).

Control rows (ids starting with ``#``) carry no ``key``, ``status`` or ``id_prefix``: the indexes hold jobs only.
A keys-only index answers with the table key and the index keys; rows are fetched with ``BatchGetItem``
(100 keys a request), so a ``list --limit 10`` reads at most 11 small index pages and 10 rows, whatever
the table holds. An index is eventually consistent: a row fetched may have moved on since the index
entry was written; callers that filter re-check the fetched row.
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify
from vlmwatch.adapters.dynamo import deserialize_item, serialize_item
from vlmwatch.adapters.jobstore import (
    EXECUTION_INDEX,
    ID_PREFIX_FIELD,
    ID_PREFIX_INDEX,
    ID_PREFIX_LENGTH,
    KEY_INDEX,
    STATUS_INDEX,
    id_prefix,
)
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status

BATCH_GET_MAX = 100  # DynamoDB's BatchGetItem limit
# Proposed (keys only: HASH outcome, RANGE updated_at): "failed, delivered or not" as one query. Used
# where the table has it; without it, delivered outcomes are found by reading delivered rows.
OUTCOME_INDEX = "ByOutcome"


@dataclass
class ReadMeter:
    """What the queries read: requests, items (index entries and rows), the read units DynamoDB reports
    (``ReturnConsumedCapacity``), and the read units DynamoDB's pricing rules give for the items returned
    (``estimated_units``: a query or scan page costs its summed size in 4 KB steps, halved when eventually
    consistent; a BatchGetItem row costs its own size in 4 KB steps). moto reports a flat 1.0 per request,
    so the estimate is what tells a scan from a query there."""

    requests: int = 0
    items: int = 0
    capacity_units: float = 0.0
    estimated_units: float = 0.0
    by_operation: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        operation: str,
        response: dict[str, Any],
        items: list[dict[str, Any]],
        *,
        per_item: bool,
        consistent: bool = False,
    ) -> None:
        read = int(response.get("ScannedCount", len(items)))
        self.requests += 1
        self.items += read
        self.by_operation[operation] = self.by_operation.get(operation, 0) + read
        consumed = response.get("ConsumedCapacity")
        for entry in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.capacity_units += float(entry.get("CapacityUnits", 0.0))
        if per_item:  # BatchGetItem: each row in 4 KB steps
            self.estimated_units += sum(math.ceil(item_size(i) / 4096) for i in items) / (1 if consistent else 2)
        else:  # an index query or a scan, eventually consistent (what the CLI asks for)
            self.estimated_units += max(1, math.ceil(sum(item_size(i) for i in items) / 4096)) / 2


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (attribute names plus values), close enough to price reads."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind in ("S", "B"):
        return len(data.encode() if isinstance(data, str) else data)
    if kind == "N":
        return len(str(data).lstrip("-").replace(".", "")) // 2 + 2
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in data)
    return 1


def _missing_index(exc: ClientError, index: str) -> bool:
    """DynamoDB's answer to a query of an index the table does not have: ValidationException ("The table does
    not have the specified index"), the only one a well-formed query meets; moto says ResourceNotFound."""
    kind = classify(exc)
    return kind == AwsErrorKind.INVALID or (
        kind == AwsErrorKind.NOT_FOUND and index in str(exc.response.get("Error", {}).get("Message", ""))
    )


def merge_newest(lists: list[list[IndexEntry]], limit: int | None) -> list[IndexEntry]:
    """Newest-first lists merged newest first, at most ``limit``."""
    entries = list(heapq.merge(*lists, key=lambda e: (-e.at, e.job_id)))
    return entries if limit is None else entries[:limit]


@dataclass(frozen=True)
class IndexEntry:
    """One keys-only index entry: the job id and the index's range value (``created_at`` or ``updated_at``)."""

    job_id: str
    at: int
    status: str | None = None


class JobQueries:
    """Read-only questions about jobs, each a bounded set of queries.

    Args:
        client: a boto3 DynamoDB client.
        table_name: the job table.
        meter: counts what is read (the CLI's benchmark and tests read it).
    """

    def __init__(self, client: Any, table_name: str, *, meter: ReadMeter | None = None) -> None:
        self._client = client
        self._table = table_name
        self.meter = meter or ReadMeter()

    # -- index queries ----------------------------------------------------------------------------

    def _query(
        self, operation: str, limit: int | None, *, page_size: int | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Index items, in index order, at most ``limit`` (None: all), read lazily a page at a time
        (``page_size`` entries, else up to ``limit``, else DynamoDB's own 1 MB pages)."""
        kwargs = {"TableName": self._table, "ReturnConsumedCapacity": "TOTAL", **kwargs}
        remaining = limit
        while remaining is None or remaining > 0:
            sizes = [n for n in (remaining, page_size) if n is not None]
            if sizes:
                kwargs["Limit"] = min(sizes)
            page = self._client.query(**kwargs)
            items = page.get("Items", [])
            self.meter.add(operation, page, items, per_item=False)
            for item in items:
                yield deserialize_item(item)
            if remaining is not None:
                remaining -= len(items)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def for_key(self, key: str, *, limit: int | None = None) -> list[IndexEntry]:
        """Jobs of one input key, newest created first."""
        items = self._query(
            "query ByKey",
            limit,
            IndexName=KEY_INDEX,
            KeyConditionExpression="#k = :k",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues=serialize_item({":k": key}),
            ScanIndexForward=False,
        )
        return [IndexEntry(str(i["job_id"]), int(i["created_at"])) for i in items]

    def in_status(self, status: Status, *, since: int | None = None, limit: int | None = None) -> list[IndexEntry]:
        """Jobs in ``status`` whose row changed at or after ``since``, most recently changed first."""
        return list(self.iter_status(status, since=since, limit=limit))

    def iter_status(
        self,
        status: Status,
        *,
        since: int | None = None,
        limit: int | None = None,
        page: int | None = None,
    ) -> Iterator[IndexEntry]:
        """As :meth:`in_status`, read lazily ``page`` entries at a time (stop early: read no more)."""
        condition = "#s = :s"
        values: dict[str, Any] = {":s": status.value}
        names = {"#s": "status"}
        if since is not None:
            condition += " AND updated_at >= :t"
            values[":t"] = since
        items = self._query(
            "query ByStatus",
            limit,
            page_size=page,
            IndexName=STATUS_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=serialize_item(values),
            ScanIndexForward=False,
        )
        for i in items:
            yield IndexEntry(str(i["job_id"]), int(i["updated_at"]), status.value)

    def newest(
        self, statuses: Iterable[Status] = tuple(Status), *, since: int | None = None, limit: int | None = None
    ) -> list[IndexEntry]:
        """The ``limit`` most recently changed jobs over ``statuses``: one query per status, merged."""
        return merge_newest([self.in_status(s, since=since, limit=limit) for s in sorted(set(statuses))], limit)

    @functools.cached_property
    def has_outcome_index(self) -> bool:
        """Whether the table has :data:`OUTCOME_INDEX`: then "failed, delivered or not" is one query.
        DescribeTable is a control-plane call (no read units); without the permission, assume not."""
        try:
            table = self._client.describe_table(TableName=self._table)["Table"]
        except ClientError:
            return False
        return any(i["IndexName"] == OUTCOME_INDEX for i in table.get("GlobalSecondaryIndexes", []))

    def in_outcome(self, outcome: Status, *, since: int | None = None, limit: int | None = None) -> list[IndexEntry]:
        """Jobs whose outcome is ``outcome`` (finished or already delivered), most recently changed first
        (only where :attr:`has_outcome_index`)."""
        condition = "#o = :o" + (" AND updated_at >= :t" if since is not None else "")
        values: dict[str, Any] = {":o": outcome.value, **({":t": since} if since is not None else {})}
        items = self._query(
            "query ByOutcome",
            limit,
            IndexName=OUTCOME_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames={"#o": "outcome"},
            ExpressionAttributeValues=serialize_item(values),
            ScanIndexForward=False,
        )
        return [IndexEntry(str(i["job_id"]), int(i["updated_at"]), outcome.value) for i in items]

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 20) -> list[str]:
        """Distinct job ids starting with ``prefix`` (at most ``limit``).

        A prefix of :data:`~vlmwatch.adapters.jobstore.ID_PREFIX_LENGTH` or more hex digits is one query of
        the keys-only ``ByIdPrefix`` index (hash: the id's first digits, range: the id, ``begins_with``): an
        answer the size of the matches, whatever the table holds, and a job that changes status meanwhile is
        one entry there, found once. Rows created before that index existed carry no ``id_prefix``; only
        when the index finds nothing (or the table does not have it yet: a stack being upgraded, one index
        per deploy) are they looked for the old way (:meth:`_ids_by_status_walk`).
        """
        found: list[str] = []
        if len(prefix) >= ID_PREFIX_LENGTH:
            try:
                found = self._ids_by_prefix_index(prefix, limit)
            except ClientError as exc:
                if not _missing_index(exc, ID_PREFIX_INDEX):
                    raise
        return found or self._ids_by_status_walk(prefix, limit)

    def _ids_by_prefix_index(self, prefix: str, limit: int) -> list[str]:
        items = self._query(
            "query ByIdPrefix",
            limit,
            IndexName=ID_PREFIX_INDEX,
            KeyConditionExpression="#h = :h AND begins_with(job_id, :p)",
            ExpressionAttributeNames={"#h": ID_PREFIX_FIELD},
            ExpressionAttributeValues=serialize_item({":h": id_prefix(prefix), ":p": prefix}),
        )
        return list(dict.fromkeys(str(i["job_id"]) for i in items))

    def _ids_by_status_walk(self, prefix: str, limit: int) -> list[str]:
        """Rows without ``id_prefix`` (written before ``ByIdPrefix``): every ``ByStatus`` entry read, one status
        at a time, filtered by prefix (keys only, about 70 bytes an entry, never the rows). A job that moves
        on between two statuses' queries is read twice: ids are counted once."""
        found: dict[str, None] = {}
        for status in Status:  # lifecycle order: a job moving forward is met again later, never missed
            for item in self._query(
                "query ByStatus (id prefix)",
                None,
                IndexName=STATUS_INDEX,
                KeyConditionExpression="#s = :s",
                FilterExpression="begins_with(job_id, :p)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=serialize_item({":s": status.value, ":p": prefix}),
            ):
                found[str(item["job_id"])] = None
                if len(found) >= limit:
                    return list(found)
        return list(found)

    def job_id_for_execution(self, execution_id: str) -> str | None:
        items = list(
            self._query(
                "query ByExecutionId",
                1,
                IndexName=EXECUTION_INDEX,
                KeyConditionExpression="execution_id = :e",
                ExpressionAttributeValues=serialize_item({":e": execution_id}),
            )
        )
        return str(items[0]["job_id"]) if items else None

    # -- rows -------------------------------------------------------------------------------------

    def rows(self, job_ids: Iterable[str], *, consistent: bool = True) -> list[Job]:
        """The rows of ``job_ids`` (BatchGetItem), in the order asked; ids whose row is gone (expired) are
        left out. ``consistent=False`` halves the cost where the index that chose the ids is itself
        eventually consistent (listings)."""
        wanted = list(dict.fromkeys(job_ids))
        found: dict[str, Job] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX):
            keys = [serialize_item({"job_id": j}) for j in wanted[start : start + BATCH_GET_MAX]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": consistent}}
            backoff = 0.05
            while request:
                response = self._client.batch_get_item(RequestItems=request, ReturnConsumedCapacity="TOTAL")
                items = response.get("Responses", {}).get(self._table, [])
                self.meter.add("BatchGetItem", response, items, per_item=True, consistent=consistent)
                for item in items:
                    job = Job.from_item(deserialize_item(item))
                    found[job.job_id] = job
                # Unprocessed keys (throttling): asked again, after a short pause, as DynamoDB advises.
                request = response.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        return [found[j] for j in wanted if j in found]

    def get(self, job_id: str) -> Job | None:
        rows = self.rows([job_id])
        return rows[0] if rows else None

    def scan_all(self) -> list[Job]:
        """Every job by a full table scan: what ``list`` did before the indexes (kept for the benchmark)."""
        jobs: list[Job] = []
        kwargs: dict[str, Any] = {"TableName": self._table, "ReturnConsumedCapacity": "TOTAL"}
        while True:
            page = self._client.scan(**kwargs)
            items = page.get("Items", [])
            self.meter.add("Scan", page, items, per_item=False)
            jobs += [Job.from_item(deserialize_item(i)) for i in items if not str(i["job_id"]["S"]).startswith("#")]
            if "LastEvaluatedKey" not in page:
                return jobs
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
