"""A VLM Run API emulator: a local HTTP server that speaks the agent-execution API and does real,
deterministic work on the files it is given.

It is a Flask (WSGI) app, so tests can reach it in-process through ``httpx.WSGITransport`` and the
local stack can serve it on a port. Behaviour is configurable per run (:class:`EmulatorConfig`, or
``POST /_emulator/config``) and per request (``X-Emulator-*`` headers on ``POST /agent/execute``, or
a directive in the input file's name: ``fail``, ``stuck``, ``unfetchable`` — a fetch error quoting the
URL, as real ones do). Every request served is counted (``GET /_emulator/stats``).

What it computes for a file: size, sha256, content type (sniffed), page count and first-page text
for PDFs, dimensions for images, line/word counts and the opening text for text files. Every
completed execution has an image artifact (a preview card); PDFs also return the document itself
as a ``doc_`` artifact. A file it cannot read (a corrupt PDF, an unknown binary) fails with a
message saying why, as the real service would.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import httpx
from flask import Flask, Response, request
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from werkzeug.exceptions import HTTPException

TERMINAL = ("completed", "failed", "cancelled")
Fetcher = Callable[[str], tuple[bytes, str | None]]
Sender = Callable[[str, bytes, dict[str, str]], None]


_FETCHER = httpx.Client(timeout=httpx.Timeout(30.0, connect=3.0), follow_redirects=True)


def _http_fetch(url: str) -> tuple[bytes, str | None]:
    # One client: a new one per request builds a TLS context each time (slow, and nothing to gain).
    response = _FETCHER.get(url)
    response.raise_for_status()
    return response.content, response.headers.get("Content-Type")


def _http_send(url: str, body: bytes, headers: dict[str, str]) -> None:
    _FETCHER.post(url, content=body, headers=headers, timeout=httpx.Timeout(10.0, connect=3.0))


def sign(secret: str, body: bytes) -> str:
    """The ``X-VLMRun-Signature`` header value for ``body``, as VLM Run computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- the request shapes, as strict as the official SDK's own models (vlmrun.types / vlmrun.client.types) ----


class _Url(BaseModel):
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://.+", value):  # the SDK's URL_PATTERN
            raise ValueError("Invalid URL: must start with http:// or https://")
        return value


class MessageContent(BaseModel):
    """The SDK's ``MessageContent``: every ``*_url`` is an object with ``url``, never a bare string."""

    type: Literal["text", "image_url", "video_url", "audio_url", "file_url", "input_file"]
    text: str | None = None
    image_url: _Url | None = None
    video_url: _Url | None = None
    audio_url: _Url | None = None
    file_url: _Url | None = None
    file_id: str | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> MessageContent:
        if self.type == "input_file":
            if self.file_id is None and self.file_url is None:
                raise ValueError("Must have either file_id or file_url")
        elif getattr(self, self.type) is None:
            raise ValueError(f"Must have {self.type}")
        return self


class RequestMetadata(BaseModel):
    environment: Literal["dev", "staging", "prod"] = "dev"
    session_id: str | None = None
    allow_training: bool = True


class ExecutionConfig(BaseModel):
    prompt: str | None = None
    json_schema: dict[str, Any] | None = None


class ExecuteRequest(BaseModel):
    """``POST /agent/execute``: what the SDK's ``agent.execute`` can send, validated the way its models do."""

    name: str | None = None
    inputs: dict[str, str | MessageContent] | None = None
    batch: bool = True
    config: ExecutionConfig | None = None
    metadata: RequestMetadata | None = None
    callback_url: str | None = None
    model: str = "vlmrun-orion-1:auto"
    toolsets: list[str] | None = Field(default=None)


@dataclass
class EmulatorConfig:
    """Per-run behaviour. Rates are probabilities drawn from a seeded RNG (deterministic per seed)."""

    api_key: str = "emulator-key"
    webhook_secret: str | None = None
    latency_seconds: float = 0.0
    status_sequence: list[str] = field(default_factory=lambda: ["enqueued", "running", "completed"])
    # None: each GET of an execution advances it one step (fast, deterministic tests).
    # A number: the execution advances one step every that many seconds (a realistic demo).
    step_seconds: float | None = None
    failure_rate: float = 0.0
    stuck_rate: float = 0.0
    rate_429: float = 0.0
    first_429: int = 0  # the first N API requests get 429 ("for a while")
    retry_after: float = 1.0
    rate_5xx: float = 0.0
    first_5xx: int = 0
    # The real ambiguous case: the execution is created, then the response hangs past the client's timeout.
    hang_rate: float = 0.0
    hang_seconds: float = 0.0
    # Callbacks that never arrive, or arrive late (up to this many seconds).
    callback_drop_rate: float = 0.0
    callback_delay_seconds: float = 0.0
    seed: int = 0
    public_url: str = "http://emulator.local/v1"

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown emulator settings: {sorted(unknown)}")
        for name, value in values.items():
            setattr(self, name, value)


@dataclass
class _Execution:
    id: str
    name: str
    created_at: float
    plan: list[str]
    outcome: str  # completed | failed | stuck
    request: dict[str, Any]
    step: int = 0
    completed_at: float | None = None
    response: dict[str, Any] | None = None
    error: str | None = None
    facts: dict[str, Any] | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    callback_sent: bool = False

    @property
    def status(self) -> str:
        return self.plan[min(self.step, len(self.plan) - 1)]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "completed_at": datetime.fromtimestamp(self.completed_at, UTC).isoformat() if self.completed_at else None,
            "response": self.response if self.status == "completed" else None,
            "usage": self.usage,
        }
        if self.status == "failed":
            body["error"] = {"message": self.error, "type": "execution_error"}
        return body


class Emulator:
    """The emulator's state and its Flask app (``.app``)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        fetch: Fetcher = _http_fetch,
        send: Sender = _http_send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._fetch = fetch
        self._send = send
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self.executions: dict[str, _Execution] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}
        self.artifacts: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: Counter[str] = Counter()
        self.callbacks: list[dict[str, Any]] = []
        self._api_requests = 0
        self.app = self._build_app()

    # -- time -----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance time-based executions and send due callbacks (the server runs this in a loop)."""
        with self._lock:
            pending = [e for e in self.executions.values() if not e.callback_sent]
        for execution in pending:
            self._advance(execution, by_poll=False)

    def _advance(self, execution: _Execution, *, by_poll: bool) -> None:
        with self._lock:
            if execution.status not in TERMINAL:
                if self.config.step_seconds is None:
                    execution.step += 1 if by_poll else 0
                else:
                    elapsed = self._clock() - execution.created_at
                    execution.step = max(execution.step, int(elapsed / max(self.config.step_seconds, 1e-6)))
                execution.step = min(execution.step, len(execution.plan) - 1)
            if execution.status in TERMINAL and execution.completed_at is None:
                execution.completed_at = self._clock()
            fire = (
                execution.status in TERMINAL
                and not execution.callback_sent
                and bool(execution.request.get("callback_url"))
            )
            if execution.status in TERMINAL:
                execution.callback_sent = True
        if fire:
            self._callback(execution)

    def _callback(self, execution: _Execution) -> None:
        body = json.dumps(execution.to_json()).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.webhook_secret:
            headers["X-VLMRun-Signature"] = sign(self.config.webhook_secret, body)
        url = execution.request["callback_url"]
        record = {"url": url, "execution_id": execution.id, "status": execution.status, "ok": True}
        with self._lock:
            roll, delay_roll = self._rng.random(), self._rng.random()
        if roll < self.config.callback_drop_rate:
            record.update(ok=False, error="dropped (emulated)")
            self.callbacks.append(record)
            return

        def send() -> None:
            try:
                self._send(url, body, headers)
            except BaseException as exc:  # a broken receiver must not break the emulator; it is recorded
                record.update(ok=False, error=str(exc))
            self.callbacks.append(record)

        if self.config.callback_delay_seconds:
            timer = threading.Timer(delay_roll * self.config.callback_delay_seconds, send)
            timer.daemon = True
            timer.start()
        else:
            send()

    # -- the work -------------------------------------------------------------------------------

    def _start(self, body: dict[str, Any], headers: dict[str, str]) -> _Execution:
        exec_id = str(uuid.UUID(int=self._rng.getrandbits(128)))
        now = self._clock()
        name = (
            body.get("name")
            or "inline:" + hashlib.sha256(json.dumps(body.get("config") or {}, sort_keys=True).encode()).hexdigest()[:8]
        )
        plan = list(self.config.status_sequence)
        if "X-Emulator-Status" in headers:
            plan = [s.strip() for s in headers["X-Emulator-Status"].split(",") if s.strip()]
        execution = _Execution(id=exec_id, name=name, created_at=now, plan=plan, outcome="completed", request=body)
        try:
            content, ctype, filename = self._input(body)
            facts, artifacts = analyze(content, filename, ctype, exec_id)
        except InputError as exc:
            execution.outcome, execution.error = "failed", str(exc)
        else:
            execution.facts = facts
            roll = self._rng.random()
            forced = headers.get("X-Emulator-Outcome")
            if forced in ("failed", "stuck", "completed"):
                execution.outcome = forced
            elif "fail" in filename.lower() or roll < self.config.failure_rate:
                execution.outcome = "failed"
                execution.error = f"the agent could not extract anything from {filename!r} (emulated failure)"
            elif "stuck" in filename.lower() or roll < self.config.failure_rate + self.config.stuck_rate:
                execution.outcome = "stuck"
            if execution.outcome == "failed" and not execution.error:
                execution.error = "emulated failure"
            refs: dict[str, str] = {}
            for object_id, data, art_type in artifacts:
                self.artifacts[(exec_id, object_id)] = (data, art_type)
                refs["preview" if object_id.startswith("img_") else "document"] = object_id
            execution.response = {
                "file": facts,
                "agent": body.get("name"),
                "prompt": (body.get("config") or {}).get("prompt"),
                "summary": summarize(facts),
                "artifacts": refs,
            }
            execution.usage = {
                "elements_processed": facts.get("pages") or 1,
                "element_type": "page" if facts.get("pages") else "image",
                "credits_used": facts.get("pages") or 1,
                "duration_seconds": 0,
            }
        if execution.outcome == "failed":
            plan = [s for s in plan if s not in TERMINAL] + ["failed"]
        elif execution.outcome == "stuck":
            plan = [s for s in plan if s not in TERMINAL] or ["running"]
        elif plan[-1] not in TERMINAL:
            plan = [*plan, "completed"]
        execution.plan = plan
        with self._lock:
            self.executions[exec_id] = execution
        self._advance(execution, by_poll=False)  # a one-step plan is done at once
        return execution

    def _input(self, body: dict[str, Any]) -> tuple[bytes, str | None, str]:
        inputs = body.get("inputs") or {}
        item = inputs.get("file") or inputs.get("input_file")
        if item is None and isinstance(inputs.get("files"), list) and inputs["files"]:
            item = inputs["files"][0]
        if isinstance(item, str):
            item = {"file_url": {"url": item}}
        if not isinstance(item, dict):
            raise InputError("inputs must include 'file' (a URL or an input_file object)")
        for kind in ("image_url", "video_url", "audio_url"):
            if item.get(kind):
                item = {"file_url": item[kind]}
        if item.get("file_id"):
            meta = self.files.get(str(item["file_id"]))
            if meta is None or meta["id"] not in self.uploads:
                raise InputError(f"file {item['file_id']} not found")
            return self.uploads[meta["id"]], meta.get("content_type"), meta.get("filename") or "file"
        url = item.get("file_url") or item.get("url")
        if isinstance(url, dict):
            url = url.get("url")
        if not url:
            raise InputError("input_file needs file_id or file_url")
        if "unfetchable" in unquote(urlparse(str(url)).path).lower():
            # Like a real fetch failure, the message quotes the URL it could not read, query string and all.
            raise InputError(f"could not download the input file from {url}: HTTP 403 Forbidden (emulated)")
        try:
            content, ctype = self._fetch(str(url))
        except Exception as exc:
            raise InputError(f"could not download the input file: {type(exc).__name__}: {exc}") from exc
        filename = unquote(urlparse(str(url)).path.rsplit("/", 1)[-1]) or "file"
        return content, ctype, filename

    # -- HTTP -----------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("vlmrun-emulator")
        emu = self

        def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
            body = {"error": {"message": message, "type": kind, "id": f"req_{uuid.uuid4().hex[:12]}"}}
            return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers or {})

        def ok(data: Any, status: int = 200) -> Response:
            return Response(json.dumps(data), status=status, mimetype="application/json")

        def detail(status: int, message: str) -> Response:
            """FastAPI's error shape, which the real API also uses."""
            return ok({"detail": message}, status=status)

        @app.before_request
        def gate() -> Response | None:
            path = request.path
            route = request.url_rule.rule if request.url_rule else path
            emu.requests[f"{request.method} {route}"] += 1
            if path.startswith("/_emulator") or path.startswith("/_uploads"):
                return None
            if emu.config.latency_seconds or "X-Emulator-Latency" in request.headers:
                time.sleep(float(request.headers.get("X-Emulator-Latency", emu.config.latency_seconds)))
            with emu._lock:
                emu._api_requests += 1
                n = emu._api_requests
                roll = emu._rng.random()
            if request.headers.get("Authorization") != f"Bearer {emu.config.api_key}":
                return detail(401, "Invalid API key")
            if n <= emu.config.first_429 or roll < emu.config.rate_429:
                emu.requests["429"] += 1
                return error(
                    429,
                    "Rate limit exceeded. Please slow down.",
                    "rate_limit_error",
                    {"Retry-After": f"{emu.config.retry_after:g}"},
                )
            if n <= emu.config.first_429 + emu.config.first_5xx or roll > 1 - emu.config.rate_5xx:
                emu.requests["5xx"] += 1
                return error(503, "The service is temporarily unavailable.", "server_error")
            return None

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> Response:
            return detail(exc.code or 500, str(exc.description))

        @app.get("/v1/health")
        def health() -> Response:
            return ok({"status": "ok"})

        @app.post("/v1/agent/execute")
        def execute() -> Response:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return detail(422, "body must be a JSON object")
            try:
                ExecuteRequest.model_validate(body)
            except ValidationError as exc:
                # FastAPI's 422: a list of {loc, msg, type}, as the real API answers a malformed body.
                errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
                return ok({"detail": errors}, status=422)
            if not body.get("batch", False):
                return error(400, "only batch executions are supported", "invalid_request_error")
            if not body.get("name") and not (body.get("config") or {}).get("prompt"):
                return error(400, "either 'name' or 'config.prompt' is required", "invalid_request_error")
            if body.get("name") and str(body["name"]).startswith("missing"):
                return error(404, f"agent {body['name']!r} not found", "not_found_error")
            execution = emu._start(body, dict(request.headers))
            with emu._lock:
                hang = emu._rng.random() < emu.config.hang_rate
            if hang:
                emu.requests["hang"] += 1
                time.sleep(emu.config.hang_seconds)  # created, but the caller has given up waiting
            return ok(execution.to_json())

        @app.get("/v1/agent/executions/<exec_id>")
        def get_execution(exec_id: str) -> Response:
            execution = emu.executions.get(exec_id)
            if execution is None:
                return detail(404, f"Execution {exec_id} not found")
            emu._advance(execution, by_poll=True)
            return ok(execution.to_json())

        @app.get("/v1/agent/executions")
        def list_executions() -> Response:
            skip = int(request.args.get("skip", 0))
            limit = int(request.args.get("limit", 10))
            items = sorted(emu.executions.values(), key=lambda e: e.created_at, reverse=True)[skip : skip + limit]
            for item in items:  # a look at an execution, like a GET (the poll-stepped mode moves on it)
                emu._advance(item, by_poll=True)
            return ok([e.to_json() for e in items])

        @app.get("/v1/artifacts")
        def get_artifact() -> Response:
            key = (request.args.get("execution_id", ""), request.args.get("object_id", ""))
            if key not in emu.artifacts:
                return detail(404, "Artifact not found")
            data, ctype = emu.artifacts[key]
            return Response(data, mimetype=ctype)

        @app.get("/v1/artifacts/list")
        def list_artifacts() -> Response:
            exec_id = request.args.get("execution_id", "")
            items = [
                {"object_id": oid, "filename": None, "source": "store"}
                for (eid, oid) in emu.artifacts
                if eid == exec_id
            ]
            return ok({"namespace_id": exec_id, "items": items})

        def file_record(file_id: str, filename: str, size: int, ctype: str | None) -> dict[str, Any]:
            return {
                "id": file_id,
                "filename": filename,
                "bytes": size,
                "purpose": "assistants",
                "created_at": datetime.now(UTC).isoformat(),
                "object": "file",
                "content_type": ctype,
                "public_url": f"{emu.config.public_url}/files/{file_id}/content",
            }

        @app.post("/v1/files")
        def upload() -> Response:
            upload = request.files.get("file")
            if upload is None:
                return detail(422, "multipart field 'file' is required")
            data = upload.read()
            file_id = str(uuid.uuid4())
            emu.uploads[file_id] = data
            emu.files[file_id] = file_record(file_id, upload.filename or "file", len(data), upload.mimetype)
            return ok(emu.files[file_id], status=201)

        @app.post("/v1/files/presigned-url")
        def presigned() -> Response:
            body = request.get_json(silent=True) or {}
            file_id = str(uuid.uuid4())
            filename = body.get("filename") or "file"
            emu.files[file_id] = file_record(file_id, filename, 0, "application/octet-stream")
            base = emu.config.public_url.rsplit("/v1", 1)[0]
            return ok(
                {
                    "id": file_id,
                    "url": f"{base}/_uploads/{file_id}",
                    "filename": filename,
                    "content_type": "application/octet-stream",
                    "upload_method": "PUT",
                    "public_url": emu.files[file_id]["public_url"],
                    "created_at": datetime.now(UTC).isoformat(),
                    "expiration": 3600,
                    "method": "PUT",
                }
            )

        @app.put("/_uploads/<file_id>")
        def put_upload(file_id: str) -> Response:
            if file_id not in emu.files:
                return Response("no such upload", status=404)
            if request.headers.get("Authorization"):
                # A presigned URL carries its own authorisation; a bearer token here is a client bug.
                return Response("unexpected Authorization header on a presigned upload", status=400)
            emu.uploads[file_id] = request.get_data()
            return Response("", status=200)

        @app.get("/v1/files/verify-upload/<file_id>")
        def verify(file_id: str) -> Response:
            if file_id not in emu.uploads:
                return detail(404, "upload not found")
            emu.files[file_id]["bytes"] = len(emu.uploads[file_id])
            return ok(emu.files[file_id])

        @app.get("/v1/files/hash/<digest>")
        def by_hash(digest: str) -> Response:
            for file_id, data in emu.uploads.items():
                if hashlib.md5(data).hexdigest() == digest:  # noqa: S324 - the SDK's cache key, not security
                    return ok(emu.files[file_id])
            return detail(404, "not found")

        @app.get("/v1/files/<file_id>")
        def get_file(file_id: str) -> Response:
            if file_id not in emu.files:
                return detail(404, "File not found")
            return ok(emu.files[file_id])

        @app.get("/_emulator/stats")
        def stats() -> Response:
            return ok({"requests": dict(emu.requests), "executions": len(emu.executions), "callbacks": emu.callbacks})

        @app.post("/_emulator/config")
        def configure() -> Response:
            try:
                emu.config.update(request.get_json(force=True) or {})
            except ValueError as exc:
                return detail(400, str(exc))
            return ok({"ok": True})

        return app


class InputError(Exception):
    """The emulated agent cannot work on the input; the execution fails with this message."""


# -- analysis ---------------------------------------------------------------------------------


def sniff(content: bytes, declared: str | None, filename: str) -> str:
    if content.startswith(b"%PDF"):
        return "application/pdf"
    if content.startswith(b"\x89PNG"):
        return "image/png"
    if content.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if content[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if filename.lower().endswith(".pdf"):
        return "application/pdf"  # claims to be a PDF: the parser will say whether it is one
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return (declared or "application/octet-stream").split(";")[0]
    return "text/plain"


def analyze(
    content: bytes, filename: str, declared: str | None, exec_id: str
) -> tuple[dict[str, Any], list[tuple[str, bytes, str]]]:
    """Facts about a file and the artifacts to return. Raises :class:`InputError` for unreadable input."""
    ctype = sniff(content, declared, filename)
    facts: dict[str, Any] = {
        "name": filename,
        "content_type": ctype,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    artifacts: list[tuple[str, bytes, str]] = []

    def object_id(kind: str) -> str:
        return f"{kind}_{hashlib.sha256(f'{exec_id}:{kind}'.encode()).hexdigest()[:6]}"

    if ctype == "application/pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(content))
            facts["pages"] = len(reader.pages)
            facts["text"] = (reader.pages[0].extract_text() or "").strip()[:500] if reader.pages else ""
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{filename!r} is not a readable PDF: {exc}") from exc
        artifacts.append((object_id("doc"), content, "application/pdf"))
    elif ctype.startswith("image/"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(content)) as image:
                facts.update(width=image.width, height=image.height, mode=image.mode, format=image.format)
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{filename!r} is not a readable image: {exc}") from exc
    elif ctype == "text/plain":
        text = content.decode("utf-8")
        facts.update(lines=len(text.splitlines()), words=len(text.split()), text=text.strip()[:500])
    else:
        raise InputError(f"unsupported file type {ctype!r} for {filename!r}")
    artifacts.insert(0, (object_id("img"), preview_card(facts), "image/png"))
    return facts, artifacts


def summarize(facts: dict[str, Any]) -> str:
    parts = [f"{facts['name']}: {facts['content_type']}, {facts['size']} bytes"]
    if "pages" in facts:
        parts.append(f"{facts['pages']} page(s)")
    if "width" in facts:
        parts.append(f"{facts['width']}x{facts['height']} px")
    if "words" in facts:
        parts.append(f"{facts['lines']} line(s), {facts['words']} word(s)")
    return ", ".join(parts)


def preview_card(facts: dict[str, Any]) -> bytes:
    """A small PNG that shows what was found: the image artifact every execution returns."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 160), (246, 248, 250))
    draw = ImageDraw.Draw(image)
    lines = [summarize(facts)[:70], f"sha256 {facts['sha256'][:32]}", (facts.get("text") or "")[:70].replace("\n", " ")]
    for i, line in enumerate(lines):
        draw.text((12, 16 + 40 * i), line.encode("latin-1", "replace").decode("latin-1"), fill=(20, 30, 60))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
