"""A small VLM Run API client: explicit timeouts, a swappable transport, and a retry policy that
never duplicates an execution.

* GETs are retried on transport errors, 5xx and 429 (honouring ``Retry-After``), with capped
  exponential backoff and jitter, a few times at most: a Lambda has a clock.
* ``POST /agent/execute`` is retried only when the server provably did not act on it: a 429, or a
  connection that was never established. A timeout, a dropped connection or a 5xx after the body was
  sent raises :class:`VlmRunAmbiguousSubmitError`; the caller records it (see :mod:`vlmwatch.submit`).
  A 2xx whose body cannot be parsed still means an execution exists: its id is kept if it can be read,
  and the submit is ambiguous if not.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError, field_validator

from vlmwatch.exceptions import (
    VlmRunAmbiguousSubmitError,
    VlmRunAuthError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
    VlmRunUnavailableError,
)
from vlmwatch.redact import sanitize

logger = logging.getLogger(__name__)

# Statuses vlmwatch knows. ``cancelled`` is documented by VLM Run (the SDK's Literal omits it); any other
# value is kept as text and treated as "still in flight" until the job's deadline says otherwise.
KNOWN_STATUSES = frozenset({"enqueued", "pending", "running", "paused", "completed", "failed", "cancelled"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=3.0)
# Artifacts can be videos: allow a longer read, same connect budget.
ARTIFACT_TIMEOUT = httpx.Timeout(120.0, connect=3.0)
STREAM_CHUNK_BYTES = 1024 * 1024
# Ids from responses go into URL paths: UUIDs and ``file_...``-style ids, never a '/', '.' or '%'.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def safe_id(value: str, what: str = "id") -> str:
    """``value`` if it is safe to put in a URL path.

    Raises:
        ValueError: it is not (a pydantic validator turns this into a validation error of the response).
    """
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise ValueError(f"{what} {sanitize(repr(value), 80)} is not a valid VLM Run id")
    return value


class Usage(BaseModel):
    model_config = {"extra": "allow"}

    elements_processed: int | None = None
    element_type: str | None = None
    credits_used: float | None = None
    steps: int | None = None
    message: str | None = None
    duration_seconds: float | None = None


class Execution(BaseModel):
    """An agent execution as ``POST /agent/execute`` and ``GET /agent/executions/{id}`` return it."""

    model_config = {"extra": "allow"}

    id: str
    name: str | None = None
    status: str
    created_at: datetime | None = None
    completed_at: datetime | None = None
    response: Any = None
    usage: Usage | None = None
    error: Any = None

    @field_validator("id")
    @classmethod
    def _safe(cls, value: str) -> str:
        return safe_id(value, "execution id")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def error_message(self) -> str:
        """The best human explanation VLM Run gave for a failure, credentials stripped."""
        return sanitize(self._error_message())

    def _error_message(self) -> str:
        for candidate in (self.error, (self.response or {}).get("error") if isinstance(self.response, dict) else None):
            if isinstance(candidate, str) and candidate:
                return candidate
            if isinstance(candidate, dict):
                msg = candidate.get("message") or candidate.get("detail")
                if msg:
                    return str(msg)
        if self.usage and self.usage.message:
            return self.usage.message
        return f"execution {self.id} ended with status {self.status} and no error message"


class ArtifactItem(BaseModel):
    model_config = {"extra": "allow"}

    object_id: str
    filename: str | None = None
    source: str | None = None


class ArtifactList(BaseModel):
    namespace_id: str | None = None
    items: list[ArtifactItem] = Field(default_factory=list)


class FileInfo(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    filename: str | None = None
    bytes: int | None = None
    public_url: str | None = None


class PresignedUpload(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    url: str
    content_type: str | None = None


@dataclass
class ArtifactStream:
    """An artifact being downloaded: read ``chunks`` once."""

    object_id: str
    content_type: str
    length: int | None
    chunks: Iterator[bytes]


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
    """Bearer token auth that re-reads a rotated key once when the server says 401.

    A 401 means the request was not acted on, so sending it again (even a POST) is safe.
    """

    def __init__(self, key: str | Callable[[bool], str]) -> None:
        self._key = key

    def _token(self, refresh: bool) -> str:
        return self._key(refresh) if callable(self._key) else self._key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token(False)}"
        response = yield request
        if response.status_code == 401 and callable(self._key):
            request.headers["Authorization"] = f"Bearer {self._token(True)}"
            yield request


class VlmRunClient:
    """Client for the VLM Run API.

    Args:
        base_url: e.g. ``https://api.vlm.run/v1``.
        api_key: the bearer token, or a callable ``(refresh: bool) -> str`` that supplies it; on a 401
            the callable is asked once more with ``refresh=True`` (a rotated key) before giving up.
        timeout: per-request timeouts; every request has one.
        transport: an ``httpx.BaseTransport`` to swap the network out (tests, the emulator).
        max_attempts: tries per idempotent request, including the first.
        max_wait: the longest single backoff this client will sleep in-process; a longer
            ``Retry-After`` is raised to the caller, who can defer the work instead of idling.
        sleep: injected for tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | Callable[[bool], str],
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        max_wait: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"User-Agent": "vlmwatch/1"},
            auth=BearerAuth(api_key),
            timeout=timeout,
            transport=transport,
        )
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._max_wait = max_wait
        self._sleep = sleep
        self.requests_sent = 0

    def close(self) -> None:
        self._http.close()

    # -- executions ---------------------------------------------------------------------------

    def execute(self, body: dict[str, Any]) -> Execution:
        """Start an agent execution (``POST /agent/execute``).

        Raises:
            VlmRunRateLimitedError: 429 after the in-process retries; nothing was created.
            VlmRunUnavailableError: could not connect; nothing was created.
            VlmRunRejectedError: a 4xx; the request is wrong.
            VlmRunAmbiguousSubmitError: the server may have created it; do not re-send blindly.
        """
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._send("POST", "agent/execute", json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left: retrying cannot duplicate anything.
                if attempt == self._max_attempts:
                    raise VlmRunUnavailableError(f"cannot connect to VLM Run: {exc}") from exc
                self._sleep(self._backoff(attempt))
                continue
            except httpx.TransportError as exc:
                raise VlmRunAmbiguousSubmitError(
                    f"POST agent/execute failed after the request was sent ({type(exc).__name__}: {exc})"
                ) from exc
            if response.status_code == 429:
                wait = retry_after_seconds(response, self._backoff(attempt))
                if attempt == self._max_attempts or wait > self._max_wait:
                    raise VlmRunRateLimitedError(f"rate limited: {error_message(response)}", retry_after=wait)
                self._sleep(wait)
                continue
            if response.status_code >= 500:
                raise VlmRunAmbiguousSubmitError(
                    f"POST agent/execute returned HTTP {response.status_code}: {error_message(response)}",
                    status_code=response.status_code,
                )
            self._raise_for_4xx(response)
            return self._parse_created(response)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _parse_created(response: httpx.Response) -> Execution:
        """A 2xx to the POST means an execution exists: never let a body we cannot read hide it."""
        try:
            return Execution.model_validate_json(response.content)
        except ValidationError as exc:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("id"), str) and SAFE_ID.match(data["id"]):
                # The id is what matters; the status is learnt by the next poll.
                return Execution(id=data["id"], name=data.get("name"), status=str(data.get("status") or "unknown"))
            raise VlmRunAmbiguousSubmitError(
                f"POST agent/execute returned HTTP {response.status_code} with a body we cannot read "
                f"(no execution id): {str(exc)[:300]}",
                status_code=response.status_code,
            ) from exc

    def get_execution(self, execution_id: str) -> Execution:
        return self._parse(self._get(f"agent/executions/{safe_id(execution_id, 'execution id')}"), Execution)

    def list_executions(self, *, skip: int = 0, limit: int = 50) -> list[Execution]:
        response = self._get("agent/executions", params={"skip": skip, "limit": limit})
        data = response.json()
        # A bare list today; tolerate a paginated {"items": [...]} envelope tomorrow.
        items: list[Any] = (data.get("items") or data.get("data") or []) if isinstance(data, dict) else data or []
        try:
            return [Execution.model_validate(item) for item in items]
        except ValidationError as exc:
            raise VlmRunError(f"unexpected executions list from VLM Run: {exc}") from exc

    # -- artifacts ----------------------------------------------------------------------------

    def list_artifacts(self, execution_id: str) -> ArtifactList:
        params = {"execution_id": safe_id(execution_id, "execution id")}
        return self._parse(self._get("artifacts/list", params=params), ArtifactList)

    @contextmanager
    def open_artifact(self, execution_id: str, object_id: str) -> Iterator[ArtifactStream]:
        """An artifact as a stream of chunks: a video of any size passes through a bounded buffer.

        The request is retried like any GET until its status line says the body is coming; the body
        itself is read once, by the caller, inside the ``with``.
        """
        params = {"execution_id": safe_id(execution_id, "execution id"), "object_id": safe_id(object_id, "object id")}
        opened: list[httpx.Response] = []

        def send() -> httpx.Response:
            request = self._http.build_request("GET", "artifacts", params=params, timeout=ARTIFACT_TIMEOUT)
            self.requests_sent += 1
            response = self._http.send(request, stream=True)
            opened.append(response)
            if not response.is_success:
                response.read()  # error bodies are small; the message is in them
            return response

        try:
            response = self._with_retries(send)
            ctype = response.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
            length = response.headers.get("Content-Length")
            yield ArtifactStream(
                object_id=object_id,
                content_type=ctype,
                length=int(length) if length and length.isdigit() else None,
                chunks=response.iter_bytes(STREAM_CHUNK_BYTES),
            )
        finally:
            for item in opened:
                item.close()

    # -- files --------------------------------------------------------------------------------

    def upload_file(self, filename: str, content: bytes, content_type: str) -> FileInfo:
        """Upload through ``POST /files?purpose=assistants`` (multipart).

        An upload is not an execution: a duplicate costs storage, never credits, so transport
        failures here are retried like GETs.
        """
        response = self._with_retries(
            lambda: self._send(
                "POST",
                "files",
                params={"purpose": "assistants"},
                files={"file": (filename, content, content_type)},
                timeout=ARTIFACT_TIMEOUT,
            )
        )
        return self._parse(response, FileInfo)

    def upload_file_presigned(
        self,
        filename: str,
        content: bytes | Callable[[], Iterator[bytes]],
        content_type: str,
        *,
        size: int | None = None,
    ) -> FileInfo:
        """The presigned flow for large files: get a URL, PUT the bytes, verify.

        ``content`` may be a callable returning a fresh iterator of chunks (with ``size``): the file is then
        streamed (from S3, say) and never held whole; each retry of the PUT opens it again.
        """
        if callable(content) and size is None:
            raise ValueError("a streamed upload needs its size (a presigned PUT cannot be chunked)")
        grant = self._parse(
            self._with_retries(
                lambda: self._send("POST", "files/presigned-url", json={"filename": filename, "purpose": "assistants"})
            ),
            PresignedUpload,
        )
        put = self._with_retries(lambda: self._put_presigned(grant, content, content_type, size))
        if put.status_code >= 300:
            raise VlmRunUnavailableError(
                f"presigned upload PUT failed: HTTP {put.status_code}", status_code=put.status_code
            )
        return self._parse(self._get(f"files/verify-upload/{safe_id(grant.id, 'file id')}"), FileInfo)

    def _put_presigned(
        self,
        grant: PresignedUpload,
        content: bytes | Callable[[], Iterator[bytes]],
        content_type: str,
        size: int | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": grant.content_type or content_type}
        body: bytes | Iterator[bytes]
        if callable(content):
            body = content()
            headers["Content-Length"] = str(size)  # storage hosts refuse chunked PUTs
        else:
            body = content
        request = self._http.build_request("PUT", grant.url, content=body, headers=headers, timeout=ARTIFACT_TIMEOUT)
        self.requests_sent += 1
        # The URL carries its own authorisation; our API key must not travel to a storage host.
        return self._http.send(request, auth=httpx.Auth())

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.requests_sent += 1
        return self._http.request(method, url, **kwargs)

    def _get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._with_retries(lambda: self._send("GET", url, **kwargs))

    def _with_retries(self, call: Callable[[], httpx.Response]) -> httpx.Response:
        """Run an idempotent request, retrying transport errors, 5xx and 429."""
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            try:
                response = call()
            except httpx.TransportError as exc:
                if last:
                    raise VlmRunUnavailableError(f"VLM Run unreachable: {type(exc).__name__}: {exc}") from exc
                self._sleep(self._backoff(attempt))
                continue
            if response.status_code == 429:
                wait = retry_after_seconds(response, self._backoff(attempt))
                if last or wait > self._max_wait:
                    raise VlmRunRateLimitedError(f"rate limited: {error_message(response)}", retry_after=wait)
                self._sleep(wait)
                continue
            if response.status_code >= 500:
                if last:
                    raise VlmRunUnavailableError(
                        f"VLM Run returned HTTP {response.status_code}: {error_message(response)}",
                        status_code=response.status_code,
                    )
                self._sleep(self._backoff(attempt))
                continue
            self._raise_for_4xx(response)
            if not response.is_success:
                # Redirects are not followed (our key must not travel to another host) and a 3xx body is
                # never the thing asked for: saving it as an artifact would deliver a wrong file.
                raise VlmRunError(
                    f"unexpected HTTP {response.status_code} from VLM Run for {response.request.url.path}",
                    status_code=response.status_code,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of many callers hitting the same limit.
        return random.uniform(0, min(self._max_wait, self._backoff_base * 2 ** (attempt - 1)))

    @staticmethod
    def _raise_for_4xx(response: httpx.Response) -> None:
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

    @staticmethod
    def _parse[M: BaseModel](response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise VlmRunError(
                f"unexpected response from VLM Run for {response.request.url.path}: {exc}",
                status_code=response.status_code,
            ) from exc
