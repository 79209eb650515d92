"""The back-pressure handshake, spelled once for every flow that sends a start or a poll.

Before a request: :func:`hold` asks the throttle; if VLM Run may not be asked now, the job waits on its
row until the throttle says (never failed, never an SQS receive spent). After a 429: :func:`defer` blocks
the process, shrinks the shared budget, and puts the job off past ``Retry-After``.
"""

from __future__ import annotations

from vlmwatch.adapters.breaker import RequestKind
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.core.errors import VlmRunRateLimitedError


def hold(throttle: Backpressure, store: JobStore, job_id: str, kind: RequestKind) -> bool:
    """True when the job was put off (nothing may be sent now); False: go ahead, one request is spent."""
    wait_until = throttle.admit(kind)
    if wait_until is None:
        return False
    store.reschedule(job_id, wait_until, error=throttle.waiting_reason())
    return True


def defer(throttle: Backpressure, store: JobStore, job_id: str, exc: VlmRunRateLimitedError) -> None:
    """VLM Run said 429 for this job's request: the process waits, and so does the job."""
    store.reschedule(job_id, throttle.rate_limited(exc.retry_after), error=str(exc))
