"""Executions in flight at VLM Run, counted for the whole deployment and capped (``MaxInFlight``).

A plan's concurrency limit would otherwise show up as 429s; counted here, it becomes work that waits on
its row. One counter row (``job_id = "#inflight"``): a submit takes a slot before its POST (a
conditional ``ADD``: never past the cap), and gives it back when nothing was created or when its job
leaves flight (finished, failed, timed out). A process that dies between the two can leave the count
off by one; the sweeper recounts the in-flight index every few minutes (:meth:`InFlightSlots.recount`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from vlmwatch.adapters.dynamo import Update, conditional_update, deserialize_item, serialize_item
from vlmwatch.adapters.jobstore import IN_FLIGHT_INDEX
from vlmwatch.core.job import CONTROL_ROW_PREFIX
from vlmwatch.core.lifecycle import Status

ROW_ID = f"{CONTROL_ROW_PREFIX}inflight"
RECOUNT_SECONDS = 300


class InFlightSlots:
    """At most ``limit`` executions in flight (0 = no cap: every call is granted, no table access)."""

    def __init__(self, client: Any, table: str, limit: int, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self.limit = limit
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def take(self) -> bool:
        """One more execution may start: True (a slot is held), or False (the cap is reached: wait)."""
        if not self.enabled:
            return True
        update = Update("job_id", create=True).increment("used").when_absent_or_below("used", self.limit)
        return self._write(update) is not None

    def give_back(self) -> None:
        """An execution ended, or a submit created none."""
        if not self.enabled:
            return
        update = Update("job_id").increment("used", -1)
        self._write(update.when(f"{update.ref('used')} > {update.val(0)}"))

    def used(self) -> int:
        item = self._client.get_item(TableName=self._table, Key=serialize_item({"job_id": ROW_ID})).get("Item")
        return int(deserialize_item(item).get("used", 0)) if item else 0

    def count_executing(self, statuses: Iterable[Status], shards: int) -> int:
        """Rows of the in-flight index in ``statuses``, or ``received`` with a submit claim (its POST may have
        made an execution): what :meth:`recount` sets. ``Select=COUNT`` with a filter: the same read units as
        reading them, but nothing sent back or parsed (at 100,000 jobs in flight, 120 MB of rows otherwise)."""
        names = {"#s": "status", "#c": "submit_started_at"}
        values: dict[str, Any] = {f":s{i}": s.value for i, s in enumerate(statuses)}
        wanted = ", ".join(values)
        values[":received"] = Status.RECEIVED.value
        total = 0
        for shard in range(shards):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": IN_FLIGHT_INDEX,
                "KeyConditionExpression": "poll_shard = :shard",
                "FilterExpression": f"#s IN ({wanted}) OR (#s = :received AND attribute_exists(#c))",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": serialize_item({**values, ":shard": f"s{shard}"}),
                "Select": "COUNT",
            }
            while True:
                page = self._client.query(**kwargs)
                total += int(page.get("Count", 0))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return total

    def recount(self, in_flight: Callable[[], int]) -> bool:
        """Set the count from the job table itself, at most every ``RECOUNT_SECONDS`` for the deployment
        (a conditional write picks the one recounter). Returns whether this call recounted."""
        if not self.enabled:
            return False
        now = int(self._clock())
        claim = Update("job_id", create=True).set("recounted_at", now)
        claim.when(
            f"attribute_not_exists({claim.ref('recounted_at')}) OR "
            f"{claim.ref('recounted_at')} <= {claim.val(now - RECOUNT_SECONDS)}"
        )
        if self._write(claim) is None:
            return False
        self._write(Update("job_id").set("used", in_flight()))
        return True

    def _write(self, update: Update) -> dict[str, Any] | None:
        applied, item = conditional_update(self._client, self._table, ROW_ID, update, ReturnValues="ALL_NEW")
        return item if applied else None
