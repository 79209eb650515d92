"""Whether a request may be sent now: the gate the VLM Run client asks before each one, and what it raises.

No I/O here (the gate itself is :class:`vlmwatch.adapters.throttle.Backpressure`): a module every flow may
import to recognise a request held back by our own budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from vlmwatch.core.errors import VlmRunRateLimitedError

if TYPE_CHECKING:
    from vlmwatch.adapters.breaker import RequestKind


class Deferral(float):
    """Seconds to wait that come from our own budget or breaker, not from a 429 of VLM Run's: whoever
    waits on it must not shrink the shared budget for it (VLM Run never said "too many")."""


class RequestDeferredError(VlmRunRateLimitedError):
    """Raised *before* a request is sent: the deployment's request budget for this window is spent, this
    process is waiting out a 429, or the account's breaker is shut. Nothing was sent; ``until`` is the
    epoch second to try again. Handled as a 429 by every flow (the work waits on its row)."""

    def __init__(self, message: str, *, retry_after: float, until: int) -> None:
        super().__init__(message, retry_after=Deferral(max(0.0, retry_after)))
        self.status_code = None
        self.until = until


class RequestGate(Protocol):
    """Asked before every request the client sends (retries too): raises :class:`RequestDeferredError`
    when the request may not go now. The deployment's budget and breaker (:mod:`vlmwatch.adapters.throttle`)."""

    def gate(self, kind: RequestKind) -> None: ...
