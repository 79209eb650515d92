"""VLM Run's HTTP answers as vlmwatch errors, and the retry policy: both in one place.

Transport errors and 5xx → :class:`VlmRunUnavailableError` (or, for a POST that may have acted,
:class:`VlmRunAmbiguousSubmitError`); 429 → :class:`VlmRunRateLimitedError` with ``retry_after``;
401/403 → :class:`VlmRunAuthError`; other 4xx → :class:`VlmRunRejectedError` with the API's message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator
from typing import Protocol

import httpx
from pydantic import BaseModel, ValidationError

from vlmwatch.adapters.vlmrun.gating import RequestDeferredError
from vlmwatch.core.errors import (
    VlmRunAmbiguousSubmitError,
    VlmRunAuthError,
    VlmRunCreditsError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
    VlmRunUnavailableError,
)
from vlmwatch.core.schedule import Backoff


def error_message(response: httpx.Response) -> str:
    """Extract the API's message from ``{"error": {"message"}}`` or FastAPI's ``{"detail": ...}``."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else f"HTTP {response.status_code}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail:
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return f"HTTP {response.status_code}"


def retry_after_seconds(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default  # HTTP-date form: not worth parsing for a hint


class BearerAuth(httpx.Auth):
    """Bearer token auth that re-reads a rotated key once when the server refuses it (401, or a 403 that
    is not about credits): only a key refused *after* the re-read says the credentials are bad.

    A 401/403 means the request was not acted on, so sending it again (even a POST) is safe.
    """

    def __init__(self, key: str | Callable[[bool], str]) -> None:
        self._key = key

    def _token(self, refresh: bool) -> str:
        return self._key(refresh) if callable(self._key) else self._key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token(False)}"
        response = yield request
        if response.status_code == 403:
            # A 403 may be the plan's quota, not the key (raise_for_4xx tells them apart): a fresh key
            # changes nothing there. The body is small, and this client is synchronous.
            response.read()
            if about_credits(response.status_code, error_message(response)):
                return
        if response.status_code in (401, 403) and callable(self._key):
            request.headers["Authorization"] = f"Bearer {self._token(True)}"
            yield request


class HealthObserver(Protocol):
    """Told how each request ended, after its retries (the account's circuit breaker listens)."""

    def succeeded(self, *, started: bool = False) -> None:
        """A call went through; ``started``: it was a ``POST /agent/execute`` (the only proof credits are back)."""
        ...

    def failed(self, error: VlmRunError) -> None: ...

    def steady(self) -> bool:
        """False once calls have started failing: retrying in-process then only adds to a storm."""
        ...


class Retrier:
    """Sends a request, retrying what cannot have had an effect twice, a few times at most (a Lambda
    has a clock).

    Args:
        max_attempts: tries per request, including the first.
        backoff: the delay between tries.
        max_wait: the longest single backoff slept in-process; a longer ``Retry-After`` is raised to
            the caller, who can defer the work instead of idling.
        sleep: injected for tests.
        observer: told how each request ended (after its retries), or None.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        backoff: Backoff,
        max_wait: float,
        sleep: Callable[[float], None] = time.sleep,
        observer: HealthObserver | None = None,
    ) -> None:
        self.observer = observer
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_wait = max_wait
        self._sleep = sleep

    def send(self, call: Callable[[], httpx.Response], *, replayable: bool = True) -> httpx.Response:
        """Send with retries (see :meth:`_send`); the observer hears the outcome."""
        try:
            response = self._send(call, replayable=replayable)
        except RequestDeferredError:
            raise  # nothing was sent: VLM Run's health is not in question
        except VlmRunError as exc:
            if self.observer is not None:
                self.observer.failed(exc)
            raise
        if self.observer is not None:
            self.observer.succeeded(started=not replayable)
        return response

    def _steady(self) -> bool:
        return self.observer is None or self.observer.steady()

    def _send(self, call: Callable[[], httpx.Response], *, replayable: bool = True) -> httpx.Response:
        """Run a request, retrying what cannot have had an effect twice.

        A refused connection (the request never left) and a 429 are retried for every request. Transport
        errors after sending and 5xx are retried only when the request is ``replayable`` (a GET, an upload);
        for ``POST /agent/execute`` they raise :class:`VlmRunAmbiguousSubmitError` (see module docstring).
        """
        what = f"{'POST agent/execute' if not replayable else 'VLM Run'}"
        throttled: VlmRunRateLimitedError | None = None
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            try:
                response = call()
            except RequestDeferredError as deferred:
                if throttled is None:
                    raise
                # A retry after a 429 that our own budget holds back: the caller still hears the 429 (the
                # budget shrinks for it), with the longer of the two waits.
                wait = max(throttled.retry_after, deferred.retry_after)
                raise VlmRunRateLimitedError(throttled.message, retry_after=wait) from deferred
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left: retrying cannot duplicate anything.
                if last or not self._steady():
                    raise VlmRunUnavailableError(f"cannot connect to VLM Run: {type(exc).__name__}: {exc}") from exc
                self._sleep(self._backoff.delay(attempt))
                continue
            except httpx.TransportError as exc:
                if not replayable:
                    raise VlmRunAmbiguousSubmitError(
                        f"{what} failed after the request was sent ({type(exc).__name__}: {exc})"
                    ) from exc
                if last or not self._steady():
                    raise VlmRunUnavailableError(f"VLM Run unreachable: {type(exc).__name__}: {exc}") from exc
                self._sleep(self._backoff.delay(attempt))
                continue
            if response.status_code == 429:
                wait = retry_after_seconds(response, self._backoff.delay(attempt))
                throttled = VlmRunRateLimitedError(f"rate limited: {error_message(response)}", retry_after=wait)
                if last or wait > self._max_wait:
                    raise throttled
                self._sleep(wait)
                continue
            if response.status_code >= 500:
                message = f"returned HTTP {response.status_code}: {error_message(response)}"
                if not replayable:
                    raise VlmRunAmbiguousSubmitError(f"{what} {message}", status_code=response.status_code)
                if last or not self._steady():
                    raise VlmRunUnavailableError(f"VLM Run {message}", status_code=response.status_code)
                self._sleep(self._backoff.delay(attempt))
                continue
            raise_for_4xx(response)
            if not response.is_success and replayable:
                # Redirects are not followed (our key must not travel to another host) and a 3xx body is
                # never the thing asked for: saving it as an artifact would deliver a wrong file.
                raise VlmRunError(
                    f"unexpected HTTP {response.status_code} from VLM Run for {response.request.url.path}",
                    status_code=response.status_code,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover


# A refusal about the account's money: 402, or a 4xx that says so in as many words. Anchored phrases, not
# words: a 400 quoting a schema field ("payment_terms") is a file's problem, not the account's.
_CREDITS = re.compile(
    r"\b(insufficient|not enough|no|out of) (credits?|balance|funds)\b|\bcredits? (exhausted|depleted)\b"
    r"|\b(monthly|account|plan) quota (exceeded|reached|exhausted)\b",
    re.IGNORECASE,
)


def about_credits(status_code: int, message: str) -> bool:
    return status_code == 402 or bool(_CREDITS.search(message))


def raise_for_4xx(response: httpx.Response) -> None:
    if 400 <= response.status_code < 500 and about_credits(response.status_code, error_message(response)):
        raise VlmRunCreditsError(
            f"VLM Run refused the account: out of credits or quota (HTTP {response.status_code}): "
            f"{error_message(response)}",
            status_code=response.status_code,
        )
    if response.status_code in (401, 403):
        raise VlmRunAuthError(
            f"VLM Run refused our credentials (HTTP {response.status_code}): {error_message(response)}",
            status_code=response.status_code,
        )
    if 400 <= response.status_code < 500:
        raise VlmRunRejectedError(
            f"VLM Run rejected {response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code}: {error_message(response)}",
            status_code=response.status_code,
        )


def parse[M: BaseModel](response: httpx.Response, model: type[M]) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise VlmRunError(
            f"unexpected response from VLM Run for {response.request.url.path}: {exc}",
            status_code=response.status_code,
        ) from exc
