"""Faults: what answers an API request instead of its route, decided before the route runs.

Per request, from the seeded RNG: 429 with ``Retry-After`` (``rate_429``, or the first ``first_429``
requests), 503 (``rate_5xx``, ``first_5xx``), and the hang after a created execution (``hang_rate``).
A wrong bearer token answers 401. The control routes (``/_emulator``) and the presigned-upload target
(``/_uploads``) are not the API and never see a fault.
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from vlmwatch_local.emulator.config import EmulatorConfig


def error_body(message: str, kind: str) -> dict[str, Any]:
    """The API's own error shape."""
    return {"error": {"message": message, "type": kind, "id": f"req_{uuid.uuid4().hex[:12]}"}}


@dataclass(frozen=True)
class Refusal:
    """The answer a fault gives instead of the route's. ``tally``: counted under that name in the stats."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    tally: str | None = None


INVALID_KEY = Refusal(401, {"detail": "Invalid API key"})


class Faults:
    """Decides, per API request, whether a fault answers it. Shares the emulator's RNG and lock, so a run
    is deterministic per seed whatever mix of faults it has."""

    def __init__(self, rng: random.Random, lock: threading.RLock) -> None:
        self._rng = rng
        self._lock = lock
        self._api_requests = 0

    def is_api(self, path: str) -> bool:
        return not path.startswith(("/_emulator", "/_uploads"))

    def latency(self, config: EmulatorConfig, headers: Any) -> float:
        """Seconds to wait before answering (``X-Emulator-Latency`` on the request wins)."""
        return float(headers.get("X-Emulator-Latency", config.latency_seconds))

    def refusal(self, config: EmulatorConfig, authorization: str | None) -> Refusal | None:
        with self._lock:
            self._api_requests += 1
            n = self._api_requests
            roll = self._rng.random()
        if authorization != f"Bearer {config.api_key}":
            return INVALID_KEY
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

    def hangs(self, config: EmulatorConfig) -> bool:
        """Whether this created execution's response hangs past the caller's timeout."""
        with self._lock:
            return self._rng.random() < config.hang_rate
