"""One VLM Run request budget for the whole deployment, kept in the job table.

VLM Run's small plans allow about 10 requests a minute, for the account: ingest, poller, state machine
steps and delivery all draw on the same minute. A per-process 429 back-off (:mod:`vlmwatch.pressure`)
cannot see what the other functions spend, so each window of ``window_seconds`` has a counter row
(``job_id = "#budget#<window>"``) that every sender increments conditionally before a start or a poll:

* under the limit: the request goes;
* at the limit: nothing is sent and the work waits on its row until the next window (a submit keeps its
  job ``received`` and due then; a poll moves its job's next poll there). Nothing fails for want of budget.

A 429 means the real limit is lower than ours (another client on the account, a smaller plan): the limit
is halved (``#budget-state`` row) and grows back linearly over ``recovery_windows`` windows.

Rows whose id starts with ``#`` are not jobs; they expire by TTL after a day.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from vlmwatch.ddb import deserialize_item, serialize_item

ROW_PREFIX = "#"
STATE_ID = "#budget-state"


def is_budget_row(job_id: str) -> bool:
    return job_id.startswith(ROW_PREFIX)


class RequestBudget:
    """Shared requests-per-window budget.

    Args:
        client: a DynamoDB client.
        table: the job table.
        per_window: requests allowed per window (0 = no budget: every call is granted, no table access).
        window_seconds: 60 for "per minute" (shorter in compressed-time tests and benchmarks).
        recovery_windows: windows a halved limit takes to grow back to ``per_window``.
        clock: epoch seconds; injected for tests.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        per_window: int,
        *,
        window_seconds: int = 60,
        recovery_windows: int = 5,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._table = table
        self._per_window = per_window
        self._window = max(1, window_seconds)
        self._recovery = max(1, recovery_windows)
        self._clock = clock
        self._rng = rng or random.Random()
        self._state: tuple[float, float] | None = None  # (factor, shrunk_at), cached for a fraction of a window
        self._state_read_at = -math.inf
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._per_window > 0

    def limit(self) -> int:
        """This window's limit: ``per_window``, or less while recovering from a 429."""
        factor, shrunk_at = self._read_state()
        recovered = (self._clock() - shrunk_at) / (self._window * self._recovery)
        return max(1, math.floor(self._per_window * min(1.0, factor + max(0.0, recovered) * (1 - factor))))

    def take(self) -> int | None:
        """Spend one request. None: go ahead. Otherwise the epoch second to try again (the next window,
        spread over its first part so the waiting work does not all come back at once)."""
        if not self.enabled:
            return None
        now = self._clock()
        window = int(now // self._window)
        limit = self.limit()
        try:
            self._client.update_item(
                TableName=self._table,
                Key=serialize_item({"job_id": f"{ROW_PREFIX}budget#{window}"}),
                UpdateExpression="ADD used :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(used) OR used < :limit",
                ExpressionAttributeValues=serialize_item({":one": 1, ":limit": limit, ":expires": int(now) + 86400}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            start = (window + 1) * self._window
            return int(start + self._rng.uniform(0, self._window / 2))
        return None

    def shrink(self) -> None:
        """VLM Run answered 429: halve the current limit (shared by every function), then recover."""
        if not self.enabled:
            return
        factor = max(1.0 / self._per_window, self.limit() / self._per_window / 2)
        now = self._clock()
        # UpdateItem, not PutItem: every function's role may update rows; none needs to put this one.
        self._client.update_item(
            TableName=self._table,
            Key=serialize_item({"job_id": STATE_ID}),
            UpdateExpression="SET factor = :factor, shrunk_at = :now, expires_at = :expires",
            ExpressionAttributeValues=serialize_item(
                {":factor": str(factor), ":now": int(now), ":expires": int(now) + 86400}
            ),
        )
        with self._lock:
            self._state, self._state_read_at = (factor, now), now

    def _read_state(self) -> tuple[float, float]:
        now = self._clock()
        with self._lock:
            if self._state is not None and now - self._state_read_at < self._window / 6:
                return self._state
        item = self._client.get_item(TableName=self._table, Key=serialize_item({"job_id": STATE_ID})).get("Item")
        state = (1.0, 0.0)
        if item:
            data = deserialize_item(item)
            state = (float(data.get("factor", 1.0)), float(data.get("shrunk_at", 0)))
        with self._lock:
            self._state, self._state_read_at = state, now
        return state
