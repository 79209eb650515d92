"""A job's statuses, which may follow which, and the words for the sets of them. Defined once, here.

::

    received → submitted → enqueued|pending ⇄ running|paused → completed|failed|timed_out → delivered
        └──────────────────────────────────────────────────────────────────────────────→ skipped

Three sets, three names (never "terminal", which meant all three in turn):

* ``IN_FLIGHT``: an execution exists (or is being started) and VLM Run has not said it ended.
* ``FINISHED``: VLM Run said it ended (or its deadline passed); documents not yet written. The stream
  filter in ``template.yaml`` fires on transitions *into* this set (a test keeps the two in step).
* ``SETTLED``: nothing more will happen to the job (delivered, or skipped on purpose).

VLM Run's own statuses (``REMOTE_*``) are a different vocabulary: ``cancelled`` is theirs, not ours.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    RECEIVED = "received"
    SUBMITTED = "submitted"
    ENQUEUED = "enqueued"
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DELIVERED = "delivered"
    SKIPPED = "skipped"


IN_FLIGHT = frozenset({Status.SUBMITTED, Status.ENQUEUED, Status.PENDING, Status.RUNNING, Status.PAUSED})
FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.TIMED_OUT})
SETTLED = frozenset({Status.DELIVERED, Status.SKIPPED})
# Outcomes `vlmwatch retry` may reopen: everything else is in flight, delivered fine, or skipped on purpose.
RETRYABLE = frozenset({Status.FAILED, Status.TIMED_OUT})

_QUEUED = (Status.ENQUEUED, Status.PENDING)
_ACTIVE = (Status.RUNNING, Status.PAUSED)

# target → the statuses a job may be in for a write of that target to succeed. Explicit, so a reader
# sees every allowed step; a status never moves backwards. Queued and active statuses may replace
# each other within their pair (VLM Run pauses and resumes); a finished outcome is decided once
# (completed never turns into timed_out).
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset(),
    Status.SUBMITTED: frozenset({Status.RECEIVED}),
    Status.ENQUEUED: frozenset({Status.RECEIVED, Status.SUBMITTED, *_QUEUED}),
    Status.PENDING: frozenset({Status.RECEIVED, Status.SUBMITTED, *_QUEUED}),
    Status.RUNNING: frozenset({Status.RECEIVED, Status.SUBMITTED, *_QUEUED, *_ACTIVE}),
    Status.PAUSED: frozenset({Status.RECEIVED, Status.SUBMITTED, *_QUEUED, *_ACTIVE}),
    Status.COMPLETED: frozenset({Status.RECEIVED, *IN_FLIGHT}),
    Status.FAILED: frozenset({Status.RECEIVED, *IN_FLIGHT}),
    Status.TIMED_OUT: frozenset({Status.RECEIVED, *IN_FLIGHT}),
    Status.DELIVERED: FINISHED,
    Status.SKIPPED: frozenset({Status.RECEIVED}),
}


def allowed_from(target: Status) -> list[Status]:
    """The statuses a job may be in for a write of ``target`` to succeed (sorted: stable expressions)."""
    return sorted(ALLOWED_FROM[target])


def can_move(current: Status, target: Status) -> bool:
    return current in ALLOWED_FROM[target]


# -- VLM Run's statuses ------------------------------------------------------------------------------

# ``cancelled`` is documented by VLM Run (the SDK's Literal omits it); any other value is kept as text
# and treated as "still in flight" until the job's deadline says otherwise.
REMOTE_KNOWN = frozenset({"enqueued", "pending", "running", "paused", "completed", "failed", "cancelled"})
REMOTE_ENDED = frozenset({"completed", "failed", "cancelled"})


def local_status(remote: str, current: Status) -> Status:
    """The job status a remote status means (``cancelled`` is a failure; an unknown one changes nothing)."""
    if remote == "cancelled":
        return Status.FAILED
    if remote in REMOTE_KNOWN:
        return Status(remote)
    return current
