"""The account's circuit breaker: one row of the job table, shared by every function of a deployment.

Some failures are facts about the VLM Run account or service, not about a file: a whole-service outage
(5xx or no connection, ``failures_to_open`` calls in a row across all jobs), no credits left (402 or a
credits/quota message), credentials refused after the key was re-read (401/403). Any of them *opens*
the breaker, and so can an operator (``vlmwatch pause``). While it is open:

* nothing is sent, except **one probe per probe interval for the whole deployment**: the first caller
  past ``next_probe_at`` wins a conditional write and sends its real request (a submit when credits are
  out: only a POST can say whether they are back); everyone else's work waits on its row;
* a successful probe closes it, and intake comes back at a **ramp** (a growing share of callers is let
  through over ``ramp_seconds``), not all at once;
* the time it was open is summed (``downtime``), so a job's deadline moves by the outage it sat out.

A manual pause (and a spent monthly credit budget) is never closed by a probe: only ``resume`` does.

The row (``job_id = "#breaker"``) is read at most every ``refresh_seconds`` per process; a call that
succeeds while the breaker is closed and healthy writes nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from vlmwatch.adapters.dynamo import Update, conditional_update, deserialize_item, serialize_item
from vlmwatch.core.errors import (
    VlmRunAmbiguousSubmitError,
    VlmRunAuthError,
    VlmRunCreditsError,
    VlmRunError,
    VlmRunRejectedError,
    VlmRunUnavailableError,
)
from vlmwatch.core.job import CONTROL_ROW_PREFIX
from vlmwatch.core.redact import sanitize
from vlmwatch.core.schedule import spread

ROW_ID = f"{CONTROL_ROW_PREFIX}breaker"
RequestKind = Literal["start", "poll", "fetch"]


class Reason(StrEnum):
    UNAVAILABLE = "unavailable"  # VLM Run answers 5xx, or not at all
    CREDITS = "credits"  # out of credits or quota
    CREDENTIALS = "credentials"  # the API key is refused
    BUDGET = "budget"  # the month's recorded credits reached MonthlyCreditBudget
    PAUSED = "paused"  # an operator paused intake


# Reasons only an operator (or a new month) clears: a probe must not reopen the floodgates.
MANUAL = frozenset({Reason.PAUSED, Reason.BUDGET})
# While open, which reason may say it instead: an operator's pause wins over everything, the budget over
# what a probe could clear, a refusal of the account over an outage; an outage replaces nothing (once
# credits are known to be out, a 5xx must not turn the breaker into one any GET can close).
REPLACES: dict[Reason, frozenset[Reason]] = {
    Reason.PAUSED: frozenset(Reason),
    Reason.BUDGET: frozenset(Reason) - {Reason.PAUSED},
    Reason.CREDITS: frozenset({Reason.UNAVAILABLE, Reason.CREDITS, Reason.CREDENTIALS}),
    Reason.CREDENTIALS: frozenset({Reason.UNAVAILABLE, Reason.CREDITS, Reason.CREDENTIALS}),
    Reason.UNAVAILABLE: frozenset({Reason.UNAVAILABLE}),
}
DESCRIPTION = {
    Reason.UNAVAILABLE: "VLM Run is unavailable",
    Reason.CREDITS: "the VLM Run account is out of credits",
    Reason.CREDENTIALS: "VLM Run refuses the API key",
    Reason.BUDGET: "the monthly credit budget is spent",
    Reason.PAUSED: "intake is paused by an operator",
}


@dataclass(frozen=True)
class BreakerState:
    open: bool = False
    reason: Reason | None = None
    message: str | None = None
    since: int | None = None
    next_probe_at: int = 0
    probes: int = 0  # in all, over every episode
    episode_probes: int = 0  # since it last opened (what makes it half-open)
    failures: int = 0
    opened: int = 0
    downtime: int = 0  # seconds open, summed over closed episodes
    ramp_from: int | None = None
    ramp_seconds: int | None = None  # the ramp of whoever closed it last (None: closed before it was recorded)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> BreakerState:
        return cls(
            open=item.get("state") == "open",
            reason=Reason(item["reason"]) if item.get("reason") else None,
            message=item.get("message"),
            since=int(item["since"]) if item.get("since") is not None else None,
            next_probe_at=int(item.get("next_probe_at", 0)),
            probes=int(item.get("probes", 0)),
            episode_probes=int(item.get("episode_probes", 0)),
            failures=int(item.get("failures", 0)),
            opened=int(item.get("opened", 0)),
            downtime=int(item.get("downtime", 0)),
            ramp_from=int(item["ramp_from"]) if item.get("ramp_from") is not None else None,
            ramp_seconds=int(item["ramp_seconds"]) if item.get("ramp_seconds") is not None else None,
        )

    def downtime_until(self, now: int) -> int:
        """Seconds the breaker has been open in all, up to ``now``."""
        return self.downtime + (max(0, now - self.since) if self.open and self.since is not None else 0)

    def describe(self) -> str:
        if not self.open or self.reason is None:
            return "VLM Run is reachable (breaker closed)"
        detail = f": {self.message}" if self.message else ""
        return f"{DESCRIPTION[self.reason]} (circuit breaker open since {self.since}){detail}"


class CircuitBreaker:
    """The deployment's view of VLM Run's health (see the module docstring).

    Args:
        client: a DynamoDB client.
        table: the job table.
        failures_to_open: 5xx / connection failures in a row, across all calls, that open it.
        probe_seconds: one probe per this many seconds while open.
        ramp_seconds: after it closes, the share of callers let through grows from 10 % to all over this.
        refresh_seconds: how stale this process's copy of the row may be.
        clock: epoch seconds; injected for tests.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        failures_to_open: int = 5,
        probe_seconds: int = 30,
        ramp_seconds: int = 60,
        refresh_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._table = table
        self._failures_to_open = max(1, failures_to_open)
        self._probe = max(1, probe_seconds)
        self._ramp = max(0, ramp_seconds)
        self._refresh = refresh_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._cached: tuple[BreakerState, float] | None = None
        self.transitions: list[str] = []  # "opened:<reason>", "closed", "probe": metrics take them

    def now(self) -> int:
        return int(self._clock())

    # -- reading -------------------------------------------------------------------------------------

    def state(self, *, fresh: bool = False) -> BreakerState:
        now = self._clock()
        with self._lock:
            if not fresh and self._cached is not None and now - self._cached[1] < self._refresh:
                return self._cached[0]
        item = self._client.get_item(
            TableName=self._table, Key=serialize_item({"job_id": ROW_ID}), ConsistentRead=True
        ).get("Item")
        return self._remember(BreakerState.from_item(deserialize_item(item)) if item else BreakerState())

    def _remember(self, state: BreakerState) -> BreakerState:
        with self._lock:
            self._cached = (state, self._clock())
        return state

    def downtime_mark(self) -> int:
        """The breaker's total downtime now: kept on a job when it starts, to move its deadline later."""
        return self.state().downtime_until(self.now())

    def downtime_since(self, mark: int | None) -> int:
        """Seconds the breaker was open since ``mark`` (a job's :meth:`downtime_mark`); 0 without one."""
        if mark is None:
            return 0
        return max(0, self.state().downtime_until(self.now()) - mark)

    # -- the gate ------------------------------------------------------------------------------------

    def admit(self, kind: RequestKind) -> int | None:
        """May a request of ``kind`` be sent now? None: yes (perhaps as the probe). Else when to try again."""
        state = self.state()
        now = self.now()
        if not state.open:
            return self._ramp_gate(state, now)
        if state.reason == Reason.BUDGET:
            # The month's credits are spent: nothing new starts; what already runs is polled and delivered.
            return spread(now + self._probe, self._probe, self._rng) if kind == "start" else None
        if state.reason == Reason.PAUSED:
            return None if kind == "fetch" else spread(now + self._probe, self._probe, self._rng)
        if state.reason == Reason.CREDITS and kind != "start":
            # Reads still work without credits, but nothing runs to read: polls wait with the rest.
            return None if kind == "fetch" else spread(max(now, state.next_probe_at), self._probe, self._rng)
        if now >= state.next_probe_at and self._take_probe(now):
            return None
        return spread(max(now, state.next_probe_at), self._probe, self._rng)

    def resume_at(self) -> int:
        """When work put off now should come back (no side effect: takes no probe slot)."""
        state = self.state()
        now = self.now()
        return spread(max(now, state.next_probe_at if state.open else now), self._probe, self._rng)

    def _ramp_gate(self, state: BreakerState, now: int) -> int | None:
        if state.ramp_from is None or not self._ramp or now >= state.ramp_from + self._ramp:
            return None
        share = max(0.1, (now - state.ramp_from) / self._ramp)
        if self._rng.random() < share:
            return None
        return spread(now + 1, min(self._probe, state.ramp_from + self._ramp - now), self._rng)

    def _take_probe(self, now: int) -> bool:
        update = Update("job_id").set("next_probe_at", now + self._probe).increment("probes")
        update.increment("episode_probes")
        update.when_equals("state", "open").when(f"{update.ref('next_probe_at')} <= {update.val(now)}")
        item = self._write(update)
        if item is None:
            self.state(fresh=True)
            return False
        self.transitions.append("probe")
        return True

    # -- what happened (HealthObserver) --------------------------------------------------------------

    def steady(self) -> bool:
        state = self.state()
        return not state.open and not state.failures

    def succeeded(self, *, started: bool = False) -> None:
        state = self.state()
        # Reads work without credits: only a started execution says they are back.
        proves = started or state.reason != Reason.CREDITS
        if state.open and state.reason not in MANUAL and proves:
            self._close(state)
        elif not state.open and state.failures:
            update = Update("job_id").set("failures", 0).when_equals("state", "closed")
            self._write(update)

    def failed(self, error: VlmRunError) -> None:
        if isinstance(error, VlmRunCreditsError):
            self.open(Reason.CREDITS, error.message)
        elif isinstance(error, VlmRunAuthError):
            self.open(Reason.CREDENTIALS, error.message)
        elif isinstance(error, VlmRunRejectedError):
            self.succeeded()  # the service answered: it is up
        elif _unavailable(error):
            state = self.state()
            if state.open:
                return  # a failed probe: it stays open, the next probe is already scheduled
            update = Update("job_id", create=True).increment("failures").set("message", sanitize(error.message, 500))
            item = self._write(update.when_absent_or_equals("state", "closed"))
            if item is not None and int(item.get("failures", 0)) >= self._failures_to_open:
                self.open(Reason.UNAVAILABLE, error.message)

    # -- opening and closing -------------------------------------------------------------------------

    def open(self, reason: Reason, message: str) -> None:
        """Open (or, already open for an automatic reason, say the newer reason)."""
        now = self.now()
        text = sanitize(message, 500)
        update = Update("job_id", create=True).set("state", "open").set("reason", reason.value).set("message", text)
        update.set("since", now).set("next_probe_at", now + self._probe).set("failures", 0).increment("opened")
        update.set("episode_probes", 0)
        if self._write(update.when_absent_or_equals("state", "closed")) is not None:
            self.transitions.append(f"opened:{reason.value}")
            return
        # Already open: say the newer reason, where it may replace the one there (REPLACES).
        update = Update("job_id").set("reason", reason.value).set("message", text)
        self._write(update.when_equals("state", "open").when_in("reason", sorted(r.value for r in REPLACES[reason])))

    def _close(self, state: BreakerState) -> None:
        now = self.now()
        update = Update("job_id").set("state", "closed").set("failures", 0).set("ramp_from", now)
        update.set("ramp_seconds", self._ramp)  # `vlmwatch service` says "ramping" for as long as this ramp
        update.increment("downtime", state.downtime_until(now) - state.downtime).remove("since")
        # The same episode, for the same reason this success proves resolved (the cached copy may be stale).
        assert state.reason is not None
        update.when_equals("state", "open").when_equals("since", state.since).when_equals("reason", state.reason.value)
        if self._write(update) is not None:
            self.transitions.append("closed")

    def pause(self, message: str = "paused by an operator") -> None:
        """Open for good (``vlmwatch pause``): only :meth:`resume` closes it."""
        self.open(Reason.PAUSED, message)

    def resume(self, *, only: Reason | None = None) -> BreakerState:
        """Close it (``vlmwatch resume``; with ``only``, just when open for that reason); intake comes back
        at the ramp. Conditional on the episode read, so two resumes count its downtime once."""
        state = self.state(fresh=True)
        if not state.open or (only is not None and state.reason != only):
            return state
        now = self.now()
        update = Update("job_id").set("state", "closed").set("failures", 0).set("ramp_from", now)
        update.set("ramp_seconds", self._ramp)  # `vlmwatch service` says "ramping" for as long as this ramp
        update.increment("downtime", state.downtime_until(now) - state.downtime).remove("since")
        update.when_equals("state", "open").when_equals("since", state.since)
        if only is not None:
            update.when_equals("reason", only.value)
        if self._write(update) is not None:
            self.transitions.append("closed")
        return self.state(fresh=True)

    def _write(self, update: Update) -> dict[str, Any] | None:
        """Apply a conditional update to the row; the row as it is now, or None when the condition lost."""
        applied, item = conditional_update(self._client, self._table, ROW_ID, update, ReturnValues="ALL_NEW")
        if not applied:
            return None
        self._remember(BreakerState.from_item(item))
        return item


def _unavailable(error: VlmRunError) -> bool:
    """5xx answers and connections that fail: the service is down. A POST that timed out after it was
    sent is not counted: one slow request says nothing of the service (and chaos shows they come alone)."""
    if isinstance(error, VlmRunUnavailableError):
        return True
    return isinstance(error, VlmRunAmbiguousSubmitError) and error.status_code is not None and error.status_code >= 500
