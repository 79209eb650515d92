"""Secrets from Secrets Manager: one cache, a max age, rotation-aware, and quiet when a secret is missing.

Why not ``functools.cache`` or powertools' ``get_secret`` alone: a cache with no expiry keeps a rotated-out
value for the life of the container; powertools' cache key ignores ``VersionStage``, so the current and
the previous value cannot both be cached through it; and a missing secret is fetched again on every call,
so an unauthenticated caller could make each request cost a Secrets Manager call.

* ``get(name)`` returns ``AWSCURRENT``, at most ``max_age`` seconds old.
* ``candidates(name)`` returns ``AWSCURRENT`` then ``AWSPREVIOUS`` (when there is one): during a rotation
  window the webhook accepts a signature or token made with either.
* A secret that does not exist, cannot be decrypted or may not be read is remembered as such for
  ``max_age`` and raised as one :class:`SecretUnavailableError` that says what to do.
* A passing failure (throttling, an outage, no connection) keeps serving the last good value, and is
  not asked about again for :data:`RETRY_SECONDS`: a flood of requests during a ``GetSecretValue``
  throttle costs one call, not one per request. With no good value yet, it is a
  :class:`SecretUnavailableError` (the webhook answers 503 and VLM Run retries).
* Every value read is registered with :mod:`vlmwatch.core.redact`, so no log line can print it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify, error_code
from vlmwatch.core.errors import SecretUnavailableError
from vlmwatch.core.redact import register_secret

logger = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
# Errors that will not go away by asking again: remembered for max_age, not re-asked per request.
_LASTING = (AwsErrorKind.NOT_FOUND, AwsErrorKind.ACCESS_DENIED, AwsErrorKind.INVALID)
# A forced refresh (after a 401) is honoured at most this often: a revoked key must not turn every
# request into a Secrets Manager call.
MIN_REFRESH_SECONDS = 30.0
# After a passing failure, Secrets Manager is asked again no sooner than this (per secret and stage).
RETRY_SECONDS = 10.0


@dataclass
class _Entry:
    value: str | None
    error: str | None
    fetched_at: float
    # A passing failure: until then the last good value (``value``, however old) is served as it is.
    retry_at: float = 0.0


class SecretStore:
    """Cached reads of Secrets Manager secrets.

    Args:
        client: zero-argument callable returning a ``secretsmanager`` client (created on first use, so a
            function that never reads a secret never builds one).
        max_age: seconds a value (or a lasting error) is kept before it is read again.
        clock: monotonic seconds; injected for tests.
    """

    def __init__(
        self, client: Callable[[], Any], *, max_age: float = 300.0, clock: Callable[[], float] = time.monotonic
    ):
        self._client = client
        self._max_age = max_age
        self._clock = clock
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def get(self, name: str, *, refresh: bool = False) -> str:
        """The secret's current value (``SecretString``, stripped).

        Raises:
            SecretUnavailableError: the secret is missing, empty or unreadable.
        """
        value = self._read(name, CURRENT, refresh=refresh)
        if value is None:
            raise SecretUnavailableError(
                f"secret {name!r} has no current value: put the value with "
                f"`aws secretsmanager put-secret-value --secret-id {name} --secret-string ...`"
            )
        return value

    def candidates(self, name: str) -> list[str]:
        """Current value, then the previous one while it exists (rotation window). Never empty.

        Raises:
            SecretUnavailableError: as :meth:`get`.
        """
        values = [self.get(name)]
        try:
            previous = self._read(name, PREVIOUS)
        except SecretUnavailableError:
            previous = None  # the current value works: a problem with the previous one must not stop it
        if previous and previous not in values:
            values.append(previous)
        return values

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def _read(self, name: str, stage: str, *, refresh: bool = False) -> str | None:
        now = self._clock()
        key = (name, stage)
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None:
            age = now - entry.fetched_at
            fresh = age < self._max_age and not (refresh and age >= MIN_REFRESH_SECONDS)
            if fresh or now < entry.retry_at:
                if entry.error:
                    raise SecretUnavailableError(entry.error)
                return entry.value
        try:
            fetched = self._fetch(name, stage, now)
        except (ClientError, BotoCoreError) as exc:
            # Throttled, or Secrets Manager is unreachable: not a fact about the secret. The last good value
            # stays in use, and nobody asks again for a while (each request would otherwise be a call).
            fetched = self._passing_failure(name, stage, entry, now, exc)
        with self._lock:
            self._cache[key] = fetched
        if fetched.error:
            raise SecretUnavailableError(fetched.error)
        return fetched.value

    def _passing_failure(
        self, name: str, stage: str, entry: _Entry | None, now: float, exc: ClientError | BotoCoreError
    ) -> _Entry:
        code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        if entry is not None and entry.error is None:
            logger.warning(
                "secret %r (%s) could not be re-read (%s): the last good value stays in use", name, stage, code
            )
            return _Entry(value=entry.value, error=None, fetched_at=entry.fetched_at, retry_at=now + RETRY_SECONDS)
        error = f"secret {name!r} ({stage}) cannot be read right now ({code}); asking again in {RETRY_SECONDS:.0f} s"
        return _Entry(value=None, error=error, fetched_at=now - self._max_age, retry_at=now + RETRY_SECONDS)

    def _fetch(self, name: str, stage: str, now: float) -> _Entry:
        """A fresh read; raises ``ClientError``/``BotoCoreError`` for failures that may pass."""
        try:
            response = self._client().get_secret_value(SecretId=name, VersionStage=stage)
        except ClientError as exc:
            kind = classify(exc)
            if stage == PREVIOUS and kind == AwsErrorKind.NOT_FOUND:
                return _Entry(value=None, error=None, fetched_at=now)  # never rotated: no previous value
            if kind in _LASTING:
                return _Entry(value=None, error=_explain(name, error_code(exc)), fetched_at=now)
            raise  # throttling, an outage: see _passing_failure
        value = str(response.get("SecretString") or "").strip()
        if not value:
            return _Entry(value=None, error=f"secret {name!r} ({stage}) is empty", fetched_at=now)
        register_secret(value)
        return _Entry(value=value, error=None, fetched_at=now)


def _explain(name: str, code: str) -> str:
    if code == "ResourceNotFoundException":
        return (
            f"secret {name!r} not found in Secrets Manager: create it "
            f"(`aws secretsmanager create-secret --name {name} --secret-string ...`) or fix the stack parameter"
        )
    if code in ("AccessDeniedException", "AccessDenied"):
        return f"this function may not read secret {name!r} (AccessDenied): check its role's Secrets statement"
    if code == "DecryptionFailure":
        return f"secret {name!r} cannot be decrypted with its KMS key: grant the function kms:Decrypt on it"
    return f"secret {name!r} cannot be read ({code})"
