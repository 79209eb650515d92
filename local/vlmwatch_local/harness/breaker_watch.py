"""The account's circuit breaker as a chaos run saw it: when it was open, what was sent meanwhile, and
how long the jobs that waited on it took to finish once VLM Run was back.

* **Episodes**: the ``#breaker`` row, read every tick of the harness's loop through the
  :class:`~vlmwatch.adapters.breaker.CircuitBreaker` adapter. The row says when an episode began
  (``since``) and when the last one ended (``ramp_from``, set on closing), so the edges are where they
  happened, not where a tick saw them; an episode that began and ended between two ticks shows only in
  the row's ``opened`` count (``unseen``).
* **Requests**: every VLM Run API request the emulator received, with the clock's time, from a WSGI
  middleware on the emulator's Flask app (Flask's own ``app.wsgi_app = middleware(app.wsgi_app)``).
* **Waiting jobs**: a job put off by the breaker says so on its row ("... circuit breaker open since
  <since> ..."), in ``last_poll_error`` or ``error``: read from the rows the stream keeps every tick,
  keyed by that ``since`` (the episode it waited on).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vlmwatch.adapters.breaker import CircuitBreaker, Reason

# The emulator's account faults and the breaker reason each should open it with.
REASON_FOR_FAULT = {"outage": Reason.UNAVAILABLE, "no_credits": Reason.CREDITS, "revoked_key": Reason.CREDENTIALS}
_WAITING = re.compile(r"circuit breaker open since (\d+)")
# What a request was for, by its route (the emulator's, as VLM Run's): the first prefix that matches.
KINDS = (
    ("submits", "POST /v1/agent/execute"),
    ("polls", "GET /v1/agent/executions/"),
    ("lists", "GET /v1/agent/executions"),
    ("artifacts", "GET /v1/artifacts"),
    ("files", "POST /v1/files"),
)


def kind_of(route: str) -> str:
    return next((kind for kind, prefix in KINDS if route.startswith(prefix)), "other")


@dataclass
class Episode:
    """One stretch of time the breaker was open (``end`` None: still open when the run ended)."""

    start: float
    end: float | None = None
    reasons: set[str] = field(default_factory=set)

    def holds(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


class BreakerWatch:
    """Samples the breaker and the job rows (:meth:`sample`, every tick) and logs the API requests.

    Args:
        breaker: a CircuitBreaker of the run's job table (its own: reading it moves no handler's cache).
        clock: the run's clock (the emulator's and the handlers').
    """

    def __init__(self, breaker: CircuitBreaker, clock: Callable[[], float]) -> None:
        self._breaker = breaker
        self._clock = clock
        self.episodes: list[Episode] = []
        self.requests: list[tuple[float, str]] = []  # (when, "METHOD /path") of every API request
        self.waited: dict[str, set[int]] = {}  # job id -> the ``since`` of each episode it waited on
        self.opened = 0  # episodes the row counted (``opened``), seen or not
        self.probes = 0  # probe slots taken while open (the row's ``probes``): one a probe interval at most
        self._at_start: tuple[int, int] | None = None

    def log_requests(self, app: Any) -> None:
        """Wrap ``app`` (a Flask app) so every API request it receives is logged with its time."""
        inner = app.wsgi_app

        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            path = str(environ.get("PATH_INFO", ""))
            if path.startswith("/v1/"):
                self.requests.append((self._clock(), f"{environ.get('REQUEST_METHOD')} {path}"))
            return inner(environ, start_response)

        app.wsgi_app = logged

    def sample(self, rows: Iterable[dict[str, Any]]) -> None:
        state = self._breaker.state(fresh=True)
        if self._at_start is None:
            self._at_start = (state.opened, state.probes)
        self.opened, self.probes = state.opened - self._at_start[0], state.probes - self._at_start[1]
        current = self.episodes[-1] if self.episodes and self.episodes[-1].end is None else None
        if state.open and state.since is not None:
            if current is not None and current.start != state.since:
                # It closed and opened again between two samples: the row kept the close's time.
                current.end = float(state.ramp_from) if state.ramp_from is not None else float(state.since)
                current = None
            if current is None:
                current = Episode(float(state.since))
                self.episodes.append(current)
            if state.reason is not None:
                current.reasons.add(state.reason.value)
        elif current is not None:
            current.end = float(state.ramp_from) if state.ramp_from is not None else self._clock()
        for row in rows:
            text = f"{row.get('last_poll_error') or ''} {row.get('error') or ''}"
            if "circuit breaker" in text:
                for since in _WAITING.findall(text):
                    self.waited.setdefault(str(row["job_id"]), set()).add(int(since))

    # -- the summary ---------------------------------------------------------------------------------

    def while_open(self) -> dict[str, tuple[dict[str, int], float]]:
        """Per reason: the API requests sent while the breaker was open, by kind (submits, polls, ...),
        and the seconds it was open. Edges are to the second (the row keeps whole seconds)."""
        out: dict[str, tuple[dict[str, int], float]] = {}
        end_of_run = self._clock()
        for episode in self.episodes:
            reason = "+".join(sorted(episode.reasons)) or "?"
            counts, seconds = out.get(reason, ({}, 0.0))
            sent = Counter(counts)
            sent.update(kind_of(route) for t, route in self.requests if episode.holds(t))
            length = (episode.end if episode.end is not None else end_of_run) - episode.start
            out[reason] = (dict(sent), seconds + length)
        return out

    def recovery(self, windows: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per account fault that ended: when the breaker closed after it, and when the last of the jobs
        that waited on the breaker for it got its document (seconds after the fault's end)."""
        out: dict[str, dict[str, Any]] = {}
        for window in windows:
            if window["end"] is None:
                continue
            start, end, reason = window["start"], window["end"], REASON_FOR_FAULT.get(window["kind"])
            overlapping = [e for e in self.episodes if e.start <= end and (e.end is None or e.end >= start)]
            # Open for this fault's reason; else open anyway (one fault inside another's episode: an outage
            # while out of credits leaves the breaker saying "credits", and its jobs wait all the same).
            episodes = [e for e in overlapping if reason is not None and reason.value in e.reasons] or overlapping
            opened_at = {int(e.start) for e in episodes}
            jobs = [job_id for job_id, since in self.waited.items() if since & opened_at]
            delivered = [float(rows[j]["delivered_at"]) for j in jobs if rows.get(j, {}).get("delivered_at")]
            closed = [e.end for e in episodes if e.end is not None]
            out[window["kind"]] = {
                "episodes": len(episodes),
                "reasons": sorted(set().union(*(e.reasons for e in episodes))),
                "jobs": len(jobs),
                "closed": max(closed) - end if closed and len(closed) == len(episodes) else None,
                "last_document": max(delivered) - end if delivered else None,
                "median_document": statistics.median(delivered) - end if delivered else None,
                "undelivered": len(jobs) - len(delivered),
            }
        return out
