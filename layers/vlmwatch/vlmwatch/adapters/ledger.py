"""What the work costs: VLM Run credits recorded per month, in one row of the job table per month.

Each delivered job adds the credits its execution used (``usage.credits_used``) once, when it becomes
``delivered`` (a conditional transition: a replayed delivery adds nothing). With a ``MonthlyCreditBudget``,
the month's total reaching it opens the account's circuit breaker with reason ``budget``: no more
submits until the month turns or the budget is raised (the poller checks every run) or an operator
resumes. Rows: ``job_id = "#credits#YYYY-MM"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from vlmwatch.adapters.breaker import CircuitBreaker, Reason
from vlmwatch.adapters.dynamo import Update, conditional_update, deserialize_item, serialize_item
from vlmwatch.core.job import CONTROL_ROW_PREFIX


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m")


class CreditLedger:
    """Monthly credit totals, and the budget they are held to.

    Args:
        client: a DynamoDB client.
        table: the job table.
        monthly_budget: credits a month may use (0 = no cap).
        breaker: opened with reason ``budget`` when the month's total reaches the cap.
        clock: epoch seconds.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        monthly_budget: float = 0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table
        self._budget = monthly_budget
        self._breaker = breaker
        self._clock = clock

    def _row(self, month: str) -> str:
        return f"{CONTROL_ROW_PREFIX}credits#{month}"

    def record(self, credits: float, *, failed: bool = False) -> float:
        """Add one delivered job's credits to this month; returns the month's total (opens the breaker at
        the budget)."""
        month = month_of(self._clock())
        update = Update("job_id", create=True).increment("credits", Decimal(str(credits))).increment("files")
        if failed:
            update.increment("failures")
        _, item = conditional_update(self._client, self._table, self._row(month), update, ReturnValues="ALL_NEW")
        total = float(item.get("credits", 0))
        if self._budget and total >= self._budget and self._breaker is not None:
            self._breaker.open(
                Reason.BUDGET, f"{total:g} credits recorded in {month}, MonthlyCreditBudget is {self._budget:g}"
            )
        return total

    def total(self, month: str | None = None) -> float:
        item = self._client.get_item(
            TableName=self._table, Key=serialize_item({"job_id": self._row(month or month_of(self._clock()))})
        ).get("Item")
        return float(deserialize_item(item).get("credits", 0)) if item else 0.0

    def release_if_within_budget(self) -> bool:
        """A breaker opened for the budget closes when a new month starts or the budget was raised.
        Returns whether it was closed (the poller asks every run)."""
        if self._breaker is None:
            return False
        state = self._breaker.state()
        if not (state.open and state.reason == Reason.BUDGET):
            return False
        if self._budget and self.total() >= self._budget:
            return False
        # Only if it is still the budget's: an operator's pause since then stays.
        return not self._breaker.resume(only=Reason.BUDGET).open
