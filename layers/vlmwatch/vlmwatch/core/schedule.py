"""When to try again: one backoff policy, the poll delay, and the spread that keeps waiting work apart.

Every delay vlmwatch computes is one of these three shapes, so a change to how work waits is made here:

* :class:`Backoff`: ``min(cap, base * 2^(attempt-1))``, with or without jitter (retries of one thing);
* :func:`spread`: "not before ``after``, somewhere in the next ``width`` seconds" (many jobs deferred
  by the same event, a 429 or a spent budget window, must not all come back in the same second);
* :class:`PollSchedule`: the next poll of a job, a fraction of its age at VLM Run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

_rng = random.Random()


class Jitter(StrEnum):
    NONE = "none"  # the delay itself
    FULL = "full"  # anywhere in [0, d]: spreads in-process retries of many callers hitting one limit
    UPPER = "upper"  # in [3/4 d, d]: spreads jobs that were started together, keeps the delay's order


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, capped: attempt 1 waits ``base``, each next one twice as long, up to ``cap``."""

    base: float
    cap: float
    jitter: Jitter = Jitter.NONE

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return jittered(d, self.jitter, rng)


def jittered(delay: float, jitter: Jitter, rng: random.Random | None = None) -> float:
    rng = rng or _rng
    if jitter == Jitter.FULL:
        return rng.uniform(0, delay)
    if jitter == Jitter.UPPER:
        return rng.uniform(0.75 * delay, delay)
    return delay


def spread(after: float, width: float, rng: random.Random | None = None) -> int:
    """An epoch second not before ``after`` and within ``width`` seconds of it, at random."""
    return int(after + (rng or _rng).uniform(0, max(0.0, width)))


@dataclass(frozen=True)
class PollSchedule:
    """Seconds until a job's next poll, shaped by how long it has been running at VLM Run.

    A job that has run for ``t`` seconds will likely run on for a time of the same order (durations
    are heavy-tailed: a 2-minute document and a 40-minute video share the table), so the next poll
    waits ``age_factor x t``: the delay it adds to a result stays a bounded fraction of the job's own
    duration, and the polls it costs grow with the log of that duration. Age, unlike a count of polls,
    survives whatever broke the sequence (429 deferrals, a retry, the sweeper taking over from a state
    machine). Bounded by ``first`` and ``cap``; jitter in ``[3/4 d, d]`` spreads jobs submitted together.
    """

    first: int
    cap: int
    age_factor: float

    def delay(self, age: int, rng: random.Random | None = None) -> int:
        d = min(self.cap, max(self.first, self.age_factor * max(0, age)))
        return max(1, int(jittered(d, Jitter.UPPER, rng)))
