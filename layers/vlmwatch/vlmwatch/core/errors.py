"""Everything vlmwatch raises.

VlmwatchError
├── ConfigError                  settings or routing rules are invalid (fail at cold start)
├── UnsupportedEventError        a message that is not an S3 event in a shape we know
├── SourceUnreadableError        HEAD of the input answered 403 for every spelling of its key
├── TooLargeError                an artifact or input above MAX_OBJECT_BYTES
├── SecretUnavailableError       a configured secret cannot be read
└── VlmRunError                  anything that went wrong talking to VLM Run
    ├── VlmRunUnavailableError   transport failure or 5xx; safe to retry later
    ├── VlmRunRateLimitedError   429; retry after ``retry_after`` seconds
    ├── VlmRunAccountError       a fact about the account, not the file: opens the circuit breaker
    │   ├── VlmRunAuthError      401/403 after the key was re-read: wrong or revoked
    │   └── VlmRunCreditsError   402, or a message about credits or quota
    ├── VlmRunRejectedError      other 4xx; retrying the same request will not help
    └── VlmRunAmbiguousSubmitError  a POST may or may not have created an execution
"""

from __future__ import annotations

from vlmwatch.core.redact import sanitize


class VlmwatchError(Exception):
    """Base for everything vlmwatch raises."""


class ConfigError(VlmwatchError):
    """Raised at cold start when settings or routing rules do not validate."""


class VlmRunError(VlmwatchError):
    """Base for failures talking to the VLM Run API."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        # Remote text may quote a presigned URL or run to megabytes: clean it once, here, so every row,
        # document, event and log line built from this error is clean too.
        message = sanitize(message)
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class VlmRunUnavailableError(VlmRunError):
    """Raised on a transport failure or a 5xx that is safe to retry (the request had no side effect)."""


class VlmRunRateLimitedError(VlmRunError):
    """Raised on HTTP 429; ``retry_after`` is the server's hint in seconds (or our backoff)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, status_code=429)
        self.retry_after = retry_after


class VlmRunAccountError(VlmRunError):
    """Raised when VLM Run refuses the account itself: no file is at fault, so the work waits for it."""


class VlmRunAuthError(VlmRunAccountError):
    """Raised on HTTP 401/403 (after the key was re-read once): the key is wrong or revoked."""


class VlmRunCreditsError(VlmRunAccountError):
    """Raised on HTTP 402, or a 4xx whose message is about credits or quota: the account cannot pay."""


class VlmRunRejectedError(VlmRunError):
    """Raised on a 4xx other than 429: the request itself is wrong (bad agent, bad key, bad input)."""


class VlmRunAmbiguousSubmitError(VlmRunError):
    """Raised when ``POST /agent/execute`` failed after the request may have reached the server.

    The API has no idempotency key, so the caller must not re-send: it records the attempt as ambiguous
    and waits for evidence (a signed callback); see :mod:`vlmwatch.flows.submit`.
    """


class UnsupportedEventError(VlmwatchError):
    """Raised when a message is neither an S3 notification nor an S3 EventBridge event."""


class SourceUnreadableError(VlmwatchError):
    """Every candidate key answered 403: the object is gone and we lack s3:ListBucket, or we may not read it."""


class TooLargeError(VlmwatchError):
    """An artifact or input above the configured limit (``MAX_OBJECT_BYTES``)."""

    def __init__(self, object_id: str, size: int, limit: int, *, at_least: bool = False) -> None:
        more = "more than " if at_least else ""
        super().__init__(
            f"{object_id} is {more}{size:,} bytes, above the {limit:,}-byte limit (MaxObjectBytes): not copied"
        )
        self.size = size
        self.limit = limit


class SecretUnavailableError(VlmwatchError):
    """A configured secret cannot be read; the message says which and why (never its value)."""
