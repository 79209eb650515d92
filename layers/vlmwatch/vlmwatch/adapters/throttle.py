"""Back-pressure: when VLM Run may be asked again. One concept, three scopes, one handshake.

The handshake every flow follows (through :class:`Backpressure`): ``admit(kind)`` before a start or a
poll (None: go; else the epoch second to put the work off to, rescheduled on its row, never failed), and
``rate_limited(retry_after)`` when VLM Run answers 429 (returns the second to put the work off to).

* Per account (:class:`~vlmwatch.adapters.breaker.CircuitBreaker`): VLM Run down, credits out, key
  refused, or intake paused: nothing goes but one probe per interval for the whole deployment.

* Per process (:class:`Backpressure`): after a 429, VLM Run's ``Retry-After`` holds for every request
  this process would send: the ingest batch, the sweeper and the poller all wait it out instead of
  spending requests to hear "429" again.
* Per deployment (:class:`RequestBudget`): VLM Run's small plans allow about 10 requests a minute, for
  the account: ingest, poller, state machine steps and delivery all draw on the same minute. A process
  cannot see what the other functions spend, so each window of ``window_seconds`` has a counter row
(``job_id = "#budget#<window>"``) that every sender increments conditionally before a start or a poll:

* under the limit: the request goes;
* at the limit: nothing is sent and the work waits on its row until the next window (a submit keeps its
  job ``received`` and due then; a poll moves its job's next poll there). Nothing fails for want of budget.

Every request counts, not only starts and polls: the VLM Run client asks :meth:`Backpressure.gate` before
each one it sends (artifact lists and downloads, uploads, retries). A flow that already asked ``admit`` for
its request has paid for it: the grant is kept for the calling thread and spent by that request, so one
request is never counted twice. A refused request is never sent (``RequestDeferredError``): the work waits
on its row like a 429'd one, without shrinking the budget (VLM Run never said "too many").

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

from vlmwatch.adapters.breaker import CircuitBreaker, RequestKind
from vlmwatch.adapters.dynamo import Update, conditional_update, deserialize_item, serialize_item
from vlmwatch.adapters.vlmrun.gating import Deferral, RequestDeferredError
from vlmwatch.core.job import CONTROL_ROW_PREFIX
from vlmwatch.core.schedule import spread

STATE_ID = f"{CONTROL_ROW_PREFIX}budget-state"


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
        self._spent_window = -1  # a window this process saw spent: asking DynamoDB again cannot succeed
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._per_window > 0

    @property
    def window_seconds(self) -> int:
        return self._window

    def limit(self) -> int:
        """This window's limit: ``per_window``, or less while recovering from a 429."""
        factor, shrunk_at = self._read_state()
        recovered = (self._clock() - shrunk_at) / (self._window * self._recovery)
        return max(1, math.floor(self._per_window * min(1.0, factor + max(0.0, recovered) * (1 - factor))))

    def take(self, count: int = 1) -> int | None:
        """Spend ``count`` requests at once (all or none). None: go ahead. Otherwise the epoch second to try
        again (the next window, spread over its first part so the waiting work does not all come back at
        once). ``count`` is cut to this window's limit: a bigger need then takes whole windows, piece by piece."""
        if not self.enabled:
            return None
        now = self._clock()
        window = int(now // self._window)
        if window == self._spent_window:
            return spread((window + 1) * self._window, self._window / 2, self._rng)
        limit = self.limit()
        count = max(1, min(count, limit))
        update = Update("job_id", create=True).increment("used", count).set("expires_at", int(now) + 86400)
        update.when_absent_or_below("used", limit - count + 1)
        applied, _ = conditional_update(self._client, self._table, f"{CONTROL_ROW_PREFIX}budget#{window}", update)
        if not applied:
            if count == 1:
                self._spent_window = window  # not even one left (a bigger ask may fail with some left)
            return spread((window + 1) * self._window, self._window / 2, self._rng)
        return None

    def shrink(self) -> None:
        """VLM Run answered 429: halve the current limit (shared by every function), then recover."""
        if not self.enabled:
            return
        factor = max(1.0 / self._per_window, self.limit() / self._per_window / 2)
        now = self._clock()
        # UpdateItem, not PutItem: every function's role may update rows; none needs to put this one.
        update = Update("job_id", create=True).set("factor", str(factor)).set("shrunk_at", int(now))
        conditional_update(self._client, self._table, STATE_ID, update.set("expires_at", int(now) + 86400))
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


class Backpressure:
    """When VLM Run may be asked again.

    Args:
        clock: seconds since the epoch (the process clock, so tests can move it).
        budget: the deployment's shared request budget, or None.
        breaker: the account's circuit breaker, or None.
        rng: jitter source.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        budget: RequestBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._clock = clock
        self._budget = budget
        self.breaker = breaker
        self._rng = rng or random.Random()
        self._until = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        self._paid = threading.local()  # this thread's admitted requests not yet sent: (window, count)
        self.hits = 0  # 429s seen by this process (a metric)
        self.deferred = 0  # requests the gate held back (a metric)

    def block(self, seconds: float) -> None:
        """VLM Run said 429 with ``Retry-After: seconds``: this process waits, and the shared budget shrinks.

        A :class:`~vlmwatch.adapters.vlmrun.http.Deferral` (our own budget or breaker said wait, nothing was
        sent) only makes this process wait: the budget was not too big, so it does not shrink."""
        ours = isinstance(seconds, Deferral)
        with self._lock:
            self._until = max(self._until, self._clock() + max(seconds, 0.0))
            if not ours:
                self._last = max(seconds, 0.0)
                self.hits += 1
        if self._budget is not None and not ours:
            self._budget.shrink()

    def admit(self, kind: RequestKind = "poll", count: int = 1) -> int | None:
        """May ``count`` requests (a start, a poll, a delivery's list and downloads) be sent now? None: yes
        (they are spent from the shared budget, and the client's gate lets this thread send them without
        spending again). Otherwise the epoch second to put the work off to: the breaker's next probe, after
        this process's 429 block, or in the budget's next window."""
        until = self._admit(kind, count)
        if until is None:
            self._prepay(count)
        return until

    def _admit(self, kind: RequestKind, count: int = 1) -> int | None:
        if self.blocked:
            return self.retry_at()  # no side effect: checked before the breaker may hand out its probe
        if self.breaker is not None:
            until = self.breaker.admit(kind)
            if until is not None:
                return until
        if self._budget is not None:
            return self._budget.take(count)
        return None

    def gate(self, kind: RequestKind) -> None:
        """Before each request the VLM Run client sends: spend what this thread's flow already admitted, or
        one more request of the budget (through the breaker).

        Raises:
            RequestDeferredError: it may not go now; ``until`` says when to try again.
        """
        if self._spend_prepaid():
            return
        until = self._admit(kind)
        if until is None:
            return
        with self._lock:
            self.deferred += 1
        now = self._clock()
        raise RequestDeferredError(
            f"not sent: {self.waiting_reason().removeprefix('waiting: ')}", retry_after=until - now, until=until
        )

    def _window_now(self) -> int:
        return int(self._clock() // (self._budget.window_seconds if self._budget is not None else 60))

    def _prepay(self, count: int = 1) -> None:
        """The flow admitted ``count`` requests: the client's gate lets them through without spending again.

        The grant is this flow's alone: it replaces whatever an earlier flow on this thread admitted and did
        not send (a submit whose claim was lost sends nothing). Added up, such leftovers let a later request
        skip the gate: a breaker probe answered 429 was sent again at once, past the open breaker (the pairs
        of POSTs ~60 ms apart in the credits chaos run)."""
        if self._budget is not None:
            count = min(count, self._budget.limit())  # what take() actually spent
        self._paid.value = (self._window_now(), count)

    def forfeit(self) -> None:
        """The flow is over: what it admitted and did not send is given up (no later request on this thread
        may go out on it, past the gate)."""
        self._paid.value = None

    def _spend_prepaid(self) -> bool:
        # Only within the window it was paid in: an old grant must not add to a later window's count.
        paid = getattr(self._paid, "value", None)
        if not paid or paid[1] <= 0 or paid[0] != self._window_now():
            self._paid.value = None
            return False
        self._paid.value = (paid[0], paid[1] - 1)
        return True

    def waiting_reason(self) -> str:
        """Why work is being put off now, for the row (an operator reads it)."""
        if self.breaker is not None:
            state = self.breaker.state()
            if state.open:
                return f"waiting: {state.describe()}"
        if self.blocked:
            return "waiting: rate limited by VLM Run (429)"
        return "waiting: the request budget for this window is spent"

    @property
    def blocked(self) -> bool:
        return self._clock() < self._until

    def retry_at(self) -> int:
        """When a job deferred now should be tried again: after the block, spread over about twice the last
        ``Retry-After`` (at least a second) so the deferred jobs do not all come back at once."""
        return spread(max(self._until, self._clock()) + 0.5, 0.5 + 2 * self._last, self._rng)

    def rate_limited(self, retry_after: float) -> int:
        """VLM Run said 429: block this process (and shrink the shared budget); returns when to try again."""
        self.block(retry_after)
        return self.retry_at()
