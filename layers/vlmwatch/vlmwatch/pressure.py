"""Back-pressure from VLM Run's rate limit, shared by everything in one process.

After a 429, VLM Run's ``Retry-After`` holds for every request this process would send: the ingest
batch, the sweeper and the poller all wait it out instead of spending requests to hear "429" again.
Work that cannot be sent is rescheduled on its job row (never failed), so waiting is free.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlmwatch.budget import RequestBudget


class Backpressure:
    """When VLM Run may be asked again.

    Args:
        clock: seconds since the epoch (the job store's clock, so tests can move it).
        rng: jitter source.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self._clock = clock
        self._budget = budget
        self._rng = rng or random.Random()
        self._until = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        self.hits = 0  # 429s seen by this process (a metric)

    def block(self, seconds: float) -> None:
        """VLM Run said 429 with ``Retry-After: seconds``: this process waits, and the shared budget shrinks."""
        with self._lock:
            self._until = max(self._until, self._clock() + max(seconds, 0.0))
            self._last = max(seconds, 0.0)
            self.hits += 1
        if self._budget is not None:
            self._budget.shrink()

    def admit(self) -> int | None:
        """May one start or poll be sent now? None: yes (one request of the shared budget is spent).
        Otherwise the epoch second to put the work off to: after this process's 429 block, or in the
        budget's next window."""
        if self.blocked:
            return self.retry_at()
        if self._budget is not None:
            return self._budget.take()
        return None

    @property
    def blocked(self) -> bool:
        return self._clock() < self._until

    def retry_at(self) -> int:
        """When a job deferred now should be tried again: after the block, spread over about twice the last
        ``Retry-After`` (at least a second) so the deferred jobs do not all come back at once."""
        base = max(self._until, self._clock())
        return int(base + self._rng.uniform(0.5, 1 + 2 * self._last))
