"""A small VLM Run API client: explicit timeouts, a swappable transport, and a retry policy that
never duplicates an execution.

* GETs are retried on transport errors, 5xx and 429 (honouring ``Retry-After``), with capped
  exponential backoff and jitter, a few times at most: a Lambda has a clock.
* ``POST /agent/execute`` is retried only when the server provably did not act on it: a 429, or a
  connection that was never established. A timeout, a dropped connection or a 5xx after the body was
  sent raises :class:`VlmRunAmbiguousSubmitError`; the caller records it (see :mod:`vlmwatch.flows.submit`).
  A 2xx whose body cannot be parsed still means an execution exists: its id is kept if it can be read,
  and the submit is ambiguous if not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from vlmwatch.adapters.vlmrun.gating import RequestGate
from vlmwatch.adapters.vlmrun.http import BearerAuth, HealthObserver, Retrier, parse
from vlmwatch.adapters.vlmrun.models import (
    SAFE_ID,
    ArtifactItem,
    ArtifactList,
    ArtifactStream,
    Execution,
    FileInfo,
    PresignedUpload,
    safe_id,
)
from vlmwatch.core.errors import (
    VlmRunAmbiguousSubmitError,
    VlmRunError,
    VlmRunUnavailableError,
)
from vlmwatch.core.schedule import Backoff, Jitter

if TYPE_CHECKING:
    from vlmwatch.adapters.breaker import RequestKind

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=3.0)
# Artifacts can be videos: allow a longer read, same connect budget.
ARTIFACT_TIMEOUT = httpx.Timeout(120.0, connect=3.0)
STREAM_CHUNK_BYTES = 1024 * 1024
# Where a presigned upload may go besides VLM Run's own domain: Google Cloud Storage, where VLM Run keeps
# its files (its public examples are served from it). More with ``upload_hosts`` (VLMRUN_UPLOAD_HOSTS).
KNOWN_UPLOAD_HOSTS = ("storage.googleapis.com",)
# Plain http only to this machine or a name that never leaves the local network (the emulator).
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_LOCAL_SUFFIXES = (".localhost", ".local")


def upload_target_allowed(url: str, base_url: str, extra_hosts: tuple[str, ...] = ()) -> str | None:
    """Why a presigned upload URL must not get the file's bytes, or None when it may.

    The bytes are the customer's file: they go over https to VLM Run's domain (the base URL's host and its
    siblings under the same registrable domain) or a known storage host, never to whatever a response says.
    """
    target, base = httpx.URL(url), httpx.URL(base_url)
    host, base_host = target.host.lower(), base.host.lower()
    local = host in _LOCAL_HOSTS or host.endswith(_LOCAL_SUFFIXES)
    if target.scheme != "https" and not (target.scheme == "http" and local):
        return f"the upload URL is not https (scheme {target.scheme!r}, host {host!r})"
    allowed = {base_host, *(h.lower() for h in KNOWN_UPLOAD_HOSTS), *(h.lower() for h in extra_hosts)}
    # Siblings under the base URL's domain (api.vlm.run -> uploads.vlm.run); never for an IP address.
    labels = base_host.split(".")
    domain = ".".join(labels[-2:]) if len(labels) >= 2 and not labels[-1].isdigit() and ":" not in base_host else ""
    if host in allowed or (domain and host.endswith("." + domain)):
        return None
    return f"the upload URL's host {host!r} is neither VLM Run's ({base_host}) nor a known storage host"


class VlmRunClient:
    """Client for the VLM Run API.

    Args:
        base_url: e.g. ``https://api.vlm.run/v1``.
        api_key: the bearer token, or a callable ``(refresh: bool) -> str`` that supplies it; on a 401 (or a
            403 not about the quota) it is asked once more with ``refresh=True`` (a rotated key) before giving up.
        timeout: per-request timeouts; every request has one.
        transport: an ``httpx.BaseTransport`` to swap the network out (tests, the emulator).
        max_attempts: tries per idempotent request, including the first.
        max_wait: the longest single backoff this client will sleep in-process; a longer
            ``Retry-After`` is raised to the caller, who can defer the work instead of idling.
        sleep: injected for tests.
        observer: hears how every request ended (the deployment's circuit breaker), or None.
        gate: asked before every request (retries too): the deployment's request budget and breaker. A
            request it refuses is never sent (:class:`~vlmwatch.adapters.vlmrun.http.RequestDeferredError`).
        upload_hosts: hosts a presigned upload may PUT to besides VLM Run's domain and known storage.
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
        observer: HealthObserver | None = None,
        gate: RequestGate | None = None,
        upload_hosts: tuple[str, ...] = (),
    ) -> None:
        self._base_url = base_url
        self._gate = gate
        self._upload_hosts = upload_hosts
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"User-Agent": "vlmwatch/1"},
            auth=BearerAuth(api_key),
            timeout=timeout,
            transport=transport,
        )
        # Full jitter: spreads retries of many callers hitting the same limit.
        backoff = Backoff(base=backoff_base, cap=max_wait, jitter=Jitter.FULL)
        self._retrier = Retrier(
            max_attempts=max_attempts, backoff=backoff, max_wait=max_wait, sleep=sleep, observer=observer
        )
        self._storage_retrier = Retrier(max_attempts=max_attempts, backoff=backoff, max_wait=max_wait, sleep=sleep)
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
        response = self._retrier.send(
            lambda: self._send("POST", "agent/execute", kind="start", json=body), replayable=False
        )
        return parse_created(response)

    def get_execution(self, execution_id: str) -> Execution:
        return parse(self._get(f"agent/executions/{safe_id(execution_id, 'execution id')}"), Execution)

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
        """The artifacts VLM Run holds for an execution (``GET /artifacts/list?execution_id=``).

        The SDK does not implement this call yet (``Artifacts.list`` raises ``NotImplementedError``), so its
        shape is not pinned down: ``{"items": [...]}`` (as the emulator answers), ``{"data"|"artifacts": [...]}``
        or a bare list, of objects with ``object_id`` (or ``id``) or of bare id strings, are all read.
        """
        params = {"execution_id": safe_id(execution_id, "execution id")}
        return read_artifact_list(self._get("artifacts/list", kind="fetch", params=params))

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
            self._admit("fetch")
            self.requests_sent += 1
            response = self._http.send(request, stream=True)
            opened.append(response)
            if not response.is_success:
                response.read()  # error bodies are small; the message is in them
            return response

        try:
            response = self._retrier.send(send)
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
        response = self._retrier.send(
            lambda: self._send(
                "POST",
                "files",
                kind="start",
                params={"purpose": "assistants"},
                files={"file": (filename, content, content_type)},
                timeout=ARTIFACT_TIMEOUT,
            )
        )
        return parse(response, FileInfo)

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
        grant = parse(
            self._retrier.send(
                lambda: self._send(
                    "POST", "files/presigned-url", kind="start", json={"filename": filename, "purpose": "assistants"}
                )
            ),
            PresignedUpload,
        )
        refused = upload_target_allowed(grant.url, self._base_url, self._upload_hosts)
        if refused is not None:
            # Retrying cannot change where VLM Run says to put it: the submit fails with the reason.
            # Not the file's fault and not retried in-process: the submit waits and tries again (an operator
            # can add the host with VLMRUN_UPLOAD_HOSTS meanwhile); nothing was sent anywhere.
            raise VlmRunError(f"presigned upload refused: {refused}")
        # The storage host, not VLM Run: its answers say nothing about the account (no breaker observer).
        put = self._storage_retrier.send(lambda: self._put_presigned(grant, content, content_type, size))
        if put.status_code >= 300:
            raise VlmRunUnavailableError(
                f"presigned upload PUT failed: HTTP {put.status_code}", status_code=put.status_code
            )
        return parse(self._get(f"files/verify-upload/{safe_id(grant.id, 'file id')}", kind="start"), FileInfo)

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

    def _admit(self, kind: RequestKind) -> None:
        """Every request to VLM Run's API counts against the deployment's budget (raises if it may not go)."""
        if self._gate is not None:
            self._gate.gate(kind)

    def _send(self, method: str, url: str, *, kind: RequestKind = "poll", **kwargs: Any) -> httpx.Response:
        self._admit(kind)
        self.requests_sent += 1
        return self._http.request(method, url, **kwargs)

    def _get(self, url: str, *, kind: RequestKind = "poll", **kwargs: Any) -> httpx.Response:
        return self._retrier.send(lambda: self._send("GET", url, kind=kind, **kwargs))


def read_artifact_list(response: httpx.Response) -> ArtifactList:
    """``GET /artifacts/list``'s answer, read leniently (its shape is not pinned down; see
    :meth:`VlmRunClient.list_artifacts`), its ids strictly (they go into URLs)."""
    try:
        data = response.json()
    except ValueError as exc:
        raise VlmRunError(f"unexpected artifact list from VLM Run: {exc}") from exc
    items = data
    if isinstance(data, dict):
        items = next((data[k] for k in ("items", "data", "artifacts") if isinstance(data.get(k), list)), [])
    ids: list[ArtifactItem] = []
    for item in items if isinstance(items, list) else []:
        fields: dict[str, Any] = item if isinstance(item, dict) else {"object_id": item}
        object_id = fields.get("object_id") or fields.get("id")
        if isinstance(object_id, str) and SAFE_ID.match(object_id):
            try:
                ids.append(ArtifactItem.model_validate({**fields, "object_id": object_id}))
            except ValidationError:  # an odd filename or source: the id is what counts
                ids.append(ArtifactItem(object_id=object_id))
    namespace = data.get("namespace_id") if isinstance(data, dict) else None
    return ArtifactList(namespace_id=namespace if isinstance(namespace, str) else None, items=ids)


def parse_created(response: httpx.Response) -> Execution:
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
