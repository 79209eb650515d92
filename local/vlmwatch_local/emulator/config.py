"""How the emulator behaves for a run: :class:`EmulatorConfig`, set in Python or with ``POST /_emulator/config``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class EmulatorConfig:
    """Per-run behaviour. Rates are probabilities drawn from a seeded RNG (deterministic per seed).

    Per request: ``latency_seconds``; 429s (``rate_429``, ``first_429``, ``retry_after``); 5xx
    (``rate_5xx``, ``first_5xx``); a POST that creates the execution and then hangs (``hang_rate``,
    ``hang_seconds``). Per execution: ``failure_rate``, ``stuck_rate``, the ``status_sequence`` and
    how time moves it (``step_seconds``). Per callback: ``callback_drop_rate``, ``callback_delay_seconds``.

    The account's bad days (whole-account faults, until lifted; :mod:`.faults` decides and records them):

    * ``outage_start`` / ``outage_seconds``: every API request answers 503 ``{"detail": "Service
      Unavailable"}`` while ``outage_start <= now < outage_start + outage_seconds`` (the emulator's
      clock, seconds since the epoch). :meth:`Emulator.outage` starts one now; so does setting
      ``outage_seconds`` through ``/_emulator/config`` without an ``outage_start``.
    * ``credits_executions``: None, no limit; a number, how many more executions the account can pay
      for: each one created spends one, and at 0 ``POST /agent/execute`` answers 402 ``{"detail":
      "Insufficient credits"}`` and creates nothing (reads keep working). :meth:`Emulator.top_up`.
    * ``key_revoked``: every API request answers 401 ``{"detail": "Invalid API key"}``
      (:meth:`Emulator.revoke_key`, :meth:`Emulator.restore_key`).

    The plan's rate limit: ``requests_per_minute`` (None: no limit) API requests per minute of the
    emulator's clock (fixed windows on the minute); beyond it a request answers 429 with ``Retry-After``
    (the seconds to the next window) and is not served. ``rate_limit_scope``: ``"account"`` (every
    endpoint draws on one count) or ``"endpoint"`` (each route has its own count of that size).

    ``echo_inputs``: executions carry the ``inputs`` (and inline ``config``) they were created with, as
    the agent-execution docs show; off, the bare shape of the SDK's ``AgentExecutionResponse``.
    """

    api_key: str = "emulator-key"
    webhook_secret: str | None = None
    latency_seconds: float = 0.0
    status_sequence: list[str] = field(default_factory=lambda: ["enqueued", "running", "completed"])
    # None: each GET of an execution advances it one step (fast, deterministic tests).
    # A number: the execution advances one step every that many seconds (a realistic demo).
    step_seconds: float | None = None
    failure_rate: float = 0.0
    stuck_rate: float = 0.0
    rate_429: float = 0.0
    first_429: int = 0  # the first N API requests get 429 ("for a while")
    retry_after: float = 1.0
    rate_5xx: float = 0.0
    first_5xx: int = 0
    # The real ambiguous case: the execution is created, then the response hangs past the client's timeout.
    hang_rate: float = 0.0
    hang_seconds: float = 0.0
    # Callbacks that never arrive, or arrive late (up to this many seconds).
    callback_drop_rate: float = 0.0
    callback_delay_seconds: float = 0.0
    # The account's bad days (see the docstring).
    outage_start: float | None = None
    outage_seconds: float = 0.0
    credits_executions: int | None = None
    key_revoked: bool = False
    requests_per_minute: int | None = None
    rate_limit_scope: str = "account"
    echo_inputs: bool = True
    seed: int = 0
    public_url: str = "http://emulator.local/v1"

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown emulator settings: {sorted(unknown)}")
        for name, value in values.items():
            setattr(self, name, value)
