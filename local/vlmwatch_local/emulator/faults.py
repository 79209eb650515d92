"""Faults: what answers an API request instead of its route, and the record of the account's bad days.

Per minute: the plan's rate limit (``requests_per_minute``): beyond it, 429 with ``Retry-After`` until the
next minute, counted under ``rate_limited``.

Per request, from the seeded RNG: 429 with ``Retry-After`` (``rate_429``, or the first ``first_429``
requests), 503 (``rate_5xx``, ``first_5xx``), and the hang after a created execution (``hang_rate``).
A wrong bearer token answers 401.

Per account, until lifted (:data:`ACCOUNT_FAULTS`; the knobs are in :class:`.config.EmulatorConfig`):

* ``outage``: every API request answers 503 ``{"detail": "Service Unavailable"}`` (before auth: the
  service is down, nothing behind the load balancer reads the key);
* ``revoked_key``: every API request answers 401 ``{"detail": "Invalid API key"}``;
* ``no_credits``: ``POST /agent/execute`` answers 402 ``{"detail": "Insufficient credits"}`` and creates
  nothing (the route asks :meth:`Emulator.spend_credit`); everything else keeps working.

While one is active, every API request served is counted under its name (``during``), and those it
answered itself too (``refused``); each stretch of time one was active is a :class:`FaultWindow`
(``windows``), on the emulator's clock. The control routes (``/_emulator``) and the presigned-upload
target (``/_uploads``) are not the API and never see a fault.
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vlmwatch_local.emulator.config import EmulatorConfig

ACCOUNT_FAULTS = ("outage", "no_credits", "revoked_key")


def error_body(message: str, kind: str) -> dict[str, Any]:
    """The API's own error shape."""
    return {"error": {"message": message, "type": kind, "id": f"req_{uuid.uuid4().hex[:12]}"}}


@dataclass(frozen=True)
class Refusal:
    """The answer a fault gives instead of the route's. ``tally``: counted under that name in the requests."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    tally: str | None = None


INVALID_KEY = Refusal(401, {"detail": "Invalid API key"})
SERVICE_UNAVAILABLE = Refusal(503, {"detail": "Service Unavailable"})
INSUFFICIENT_CREDITS = Refusal(402, {"detail": "Insufficient credits"})


def account_faults(config: EmulatorConfig, now: float) -> set[str]:
    """The account faults active at ``now`` under ``config``."""
    active: set[str] = set()
    start = config.outage_start
    if start is not None and start <= now < start + config.outage_seconds:
        active.add("outage")
    if config.credits_executions is not None and config.credits_executions <= 0:
        active.add("no_credits")
    if config.key_revoked:
        active.add("revoked_key")
    return active


@dataclass
class FaultWindow:
    """A stretch of time an account fault was active (``end`` None: it still is)."""

    kind: str
    start: float
    end: float | None = None
    until: float | None = None  # an outage's planned end

    def to_json(self) -> dict[str, Any]:
        seconds = None if self.end is None else round(self.end - self.start, 3)
        return {"kind": self.kind, "start": self.start, "end": self.end, "seconds": seconds}


class Faults:
    """Decides, per API request, whether a fault answers it, and keeps the account faults' record. Shares
    the emulator's RNG and lock, so a run is deterministic per seed whatever mix of faults it has."""

    def __init__(self, rng: random.Random, lock: threading.RLock) -> None:
        self._rng = rng
        self._lock = lock
        self._api_requests = 0
        self.during: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.windows: list[FaultWindow] = []
        self._open: dict[str, FaultWindow] = {}
        self._minute: tuple[int, Counter[str]] = (-1, Counter())  # the rate limit's window and its counts
        self.served_by_minute: Counter[int] = Counter()  # API requests served per minute (rate used)

    def is_api(self, path: str) -> bool:
        return not path.startswith(("/_emulator", "/_uploads"))

    def latency(self, config: EmulatorConfig, headers: Any) -> float:
        """Seconds to wait before answering (``X-Emulator-Latency`` on the request wins)."""
        return float(headers.get("X-Emulator-Latency", config.latency_seconds))

    def refusal(self, config: EmulatorConfig, authorization: str | None, now: float, route: str = "") -> Refusal | None:
        """The fault that answers this API request, if one does (counted), else None."""
        refusal = self._refusal(config, authorization, now, route)
        if refusal is None:
            with self._lock:
                self.served_by_minute[int(now // 60)] += 1
        return refusal

    def _over_limit(self, config: EmulatorConfig, now: float, route: str) -> Refusal | None:
        """The plan's per-minute limit: counts this request in its minute, or refuses it past the limit."""
        limit = config.requests_per_minute
        if limit is None:
            return None
        minute = int(now // 60)
        scope = route if config.rate_limit_scope == "endpoint" else "*"
        with self._lock:
            if self._minute[0] != minute:
                self._minute = (minute, Counter())
            counts = self._minute[1]
            if counts[scope] < limit:
                counts[scope] += 1
                return None
        wait = max(1, math.ceil((minute + 1) * 60 - now))
        return Refusal(
            429,
            error_body(f"Rate limit exceeded: {limit} requests per minute.", "rate_limit_error"),
            {"Retry-After": str(wait)},
            tally="rate_limited",
        )

    def _refusal(self, config: EmulatorConfig, authorization: str | None, now: float, route: str) -> Refusal | None:
        with self._lock:
            self._api_requests += 1
            n = self._api_requests
            roll = self._rng.random()
            active = self.observe(config, now)
            self.during.update(active)
        if "outage" in active:
            return self._refuse("outage", SERVICE_UNAVAILABLE)
        if authorization != f"Bearer {config.api_key}":
            return INVALID_KEY
        if "revoked_key" in active:
            return self._refuse("revoked_key", INVALID_KEY)
        limited = self._over_limit(config, now, route)
        if limited is not None:
            return limited
        if n <= config.first_429 or roll < config.rate_429:
            return Refusal(
                429,
                error_body("Rate limit exceeded. Please slow down.", "rate_limit_error"),
                {"Retry-After": f"{config.retry_after:g}"},
                tally="429",
            )
        if n <= config.first_429 + config.first_5xx or roll > 1 - config.rate_5xx:
            return Refusal(503, error_body("The service is temporarily unavailable.", "server_error"), tally="5xx")
        return None

    def out_of_credits(self) -> Refusal:
        """``POST /agent/execute`` with no credits left (the route found none to spend)."""
        return self._refuse("no_credits", INSUFFICIENT_CREDITS)

    def _refuse(self, kind: str, refusal: Refusal) -> Refusal:
        with self._lock:
            self.refused[kind] += 1
        return refusal

    def hangs(self, config: EmulatorConfig) -> bool:
        """Whether this created execution's response hangs past the caller's timeout."""
        with self._lock:
            return self._rng.random() < config.hang_rate

    # -- the record ---------------------------------------------------------------------------------

    def observe(self, config: EmulatorConfig, now: float) -> set[str]:
        """The account faults active now; opens and closes their windows (called on every API request,
        every tick and every change of a fault, so a window's edges are where they happened)."""
        with self._lock:
            active = account_faults(config, now)
            for kind in sorted(active - set(self._open)):
                window = FaultWindow(kind, now)
                if kind == "outage":
                    assert config.outage_start is not None
                    window.start = config.outage_start
                self._open[kind] = window
                self.windows.append(window)
            if "outage" in active:
                assert config.outage_start is not None
                self._open["outage"].until = config.outage_start + config.outage_seconds
            for kind in sorted(set(self._open) - active):
                window = self._open.pop(kind)
                window.end = now if window.until is None else min(now, window.until)
            return active

    def record(self, config: EmulatorConfig, now: float) -> dict[str, Any]:
        """The account faults, for the stats: active now, requests served during each and refused by
        each, every window, and the credits left."""
        active = self.observe(config, now)
        with self._lock:
            return {
                "active": sorted(active),
                "during": dict(self.during),
                "refused": dict(self.refused),
                "windows": [w.to_json() for w in self.windows],
                "credits_executions": config.credits_executions,
            }
