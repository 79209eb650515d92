"""The emulated service: the account's state, its clock, the work on executions, and the callbacks.

:class:`Emulator` owns a :class:`~.state.State`, an :class:`~.config.EmulatorConfig`, the
:class:`~.faults.Faults` and a clock; ``.app`` is the Flask app :func:`~.routes.build_app` mounts on it.
An execution is created with a plan of statuses (the config's ``status_sequence``, or the request's
``X-Emulator-Status``) ending in its outcome, and moves along it on each look (``step_seconds`` None)
or with time (:meth:`Emulator.tick`); once it ends, its callback is sent (signed, maybe dropped or late).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from vlmwatch.core.lifecycle import REMOTE_ENDED
from vlmwatch_local.emulator.analysis import InputError, analyze, summarize
from vlmwatch_local.emulator.config import EmulatorConfig
from vlmwatch_local.emulator.faults import Faults
from vlmwatch_local.emulator.state import Execution, State

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


class Emulator:
    """The emulator's state and its Flask app (``.app``).

    Args:
        config: per-run behaviour (changed later through ``.config``, or ``POST /_emulator/config``).
        fetch: reads an input file's URL (default: HTTP).
        send: delivers a callback (default: HTTP POST).
        clock: seconds since the epoch; the one the caller's runtime reads too.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        fetch: Fetcher = _http_fetch,
        send: Sender = _http_send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from vlmwatch_local.emulator.routes import build_app

        self.config = config or EmulatorConfig()
        self._fetch = fetch
        self._send = send
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self.state = State()
        self.faults = Faults(self._rng, self._lock)
        self.app = build_app(self)

    # -- the state, by name -----------------------------------------------------------------------

    @property
    def executions(self) -> dict[str, Execution]:
        return self.state.executions

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.state.files

    @property
    def uploads(self) -> dict[str, bytes]:
        return self.state.uploads

    @property
    def artifacts(self) -> dict[tuple[str, str], tuple[bytes, str]]:
        return self.state.artifacts

    @property
    def requests(self) -> Counter[str]:
        return self.state.requests

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        return self.state.callbacks

    def now(self) -> float:
        """The emulator's clock."""
        return self._clock()

    def render(self, execution: Execution) -> dict[str, Any]:
        """An execution as the API shows it (with its inputs unless ``echo_inputs`` is off)."""
        return execution.to_json(echo_inputs=self.config.echo_inputs)

    def stats(self) -> dict[str, Any]:
        """What ``GET /_emulator/stats`` answers: requests by route and per-request fault, executions,
        callbacks, the clock, and the account faults (:meth:`.faults.Faults.record`)."""
        return {
            "requests": dict(self.requests),
            "executions": len(self.executions),
            "callbacks": self.callbacks,
            "now": self.now(),
            "faults": self.faults.record(self.config, self.now()),
        }

    def configure(self, values: dict[str, Any]) -> None:
        """What ``POST /_emulator/config`` does. Raises ValueError for an unknown setting.

        An ``outage_seconds`` without an ``outage_start`` starts the outage now (the emulator's clock).
        """
        self.config.update(values)
        if "outage_seconds" in values and "outage_start" not in values:
            self.config.outage_start = self.now()
        self.faults.observe(self.config, self.now())

    # -- the account's bad days (see :mod:`.faults`) ------------------------------------------------

    def outage(self, seconds: float, *, start: float | None = None) -> None:
        """A whole-service outage of ``seconds`` from ``start`` (default: now); ``outage(0)`` ends one."""
        self.config.outage_start = self.now() if start is None else start
        self.config.outage_seconds = seconds
        self.faults.observe(self.config, self.now())

    def top_up(self, executions: int | None = None) -> None:
        """Credits again: ``executions`` more on top of what is left, or (None) no limit any more."""
        with self._lock:
            left = self.config.credits_executions
            self.config.credits_executions = None if executions is None or left is None else max(left, 0) + executions
        self.faults.observe(self.config, self.now())

    def revoke_key(self) -> None:
        """Every API request answers 401 until :meth:`restore_key`."""
        self.config.key_revoked = True
        self.faults.observe(self.config, self.now())

    def restore_key(self) -> None:
        self.config.key_revoked = False
        self.faults.observe(self.config, self.now())

    def spend_credit(self) -> bool:
        """Pay for one execution; False (nothing spent) when the account has no credits left."""
        with self._lock:
            left = self.config.credits_executions
            if left is not None:
                if left <= 0:
                    return False
                self.config.credits_executions = left - 1
        self.faults.observe(self.config, self.now())  # the last credit spent opens the no-credits window
        return True

    # -- time -----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance time-based executions and send due callbacks (the server runs this in a loop); close the
        windows of account faults that ended."""
        self.faults.observe(self.config, self.now())
        with self._lock:
            pending = [e for e in self.executions.values() if not e.callback_sent]
        for execution in pending:
            self.advance(execution, by_poll=False)

    def advance(self, execution: Execution, *, by_poll: bool) -> None:
        """Move an execution along its plan (a look at it, or time passing); call back once it ended."""
        with self._lock:
            if not execution.ended:
                if self.config.step_seconds is None:
                    execution.step += 1 if by_poll else 0
                else:
                    elapsed = self._clock() - execution.created_at
                    execution.step = max(execution.step, int(elapsed / max(self.config.step_seconds, 1e-6)))
                execution.step = min(execution.step, len(execution.plan) - 1)
            if execution.ended and execution.completed_at is None:
                execution.completed_at = self._clock()
            fire = execution.ended and not execution.callback_sent and bool(execution.request.get("callback_url"))
            if execution.ended:
                execution.callback_sent = True
        if fire:
            self._callback(execution)

    def _callback(self, execution: Execution) -> None:
        body = json.dumps(self.render(execution)).encode()
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

    def create_execution(self, body: dict[str, Any], headers: dict[str, str]) -> Execution:
        """A new execution for a validated ``POST /agent/execute`` body, its input read and analysed."""
        exec_id = str(uuid.UUID(int=self._rng.getrandbits(128)))
        now = self._clock()
        name = (
            body.get("name")
            or "inline:" + hashlib.sha256(json.dumps(body.get("config") or {}, sort_keys=True).encode()).hexdigest()[:8]
        )
        plan = list(self.config.status_sequence)
        if "X-Emulator-Status" in headers:
            plan = [s.strip() for s in headers["X-Emulator-Status"].split(",") if s.strip()]
        execution = Execution(id=exec_id, name=name, created_at=now, plan=plan, outcome="completed", request=body)
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
            plan = [s for s in plan if s not in REMOTE_ENDED] + ["failed"]
        elif execution.outcome == "stuck":
            plan = [s for s in plan if s not in REMOTE_ENDED] or ["running"]
        elif plan[-1] not in REMOTE_ENDED:
            plan = [*plan, "completed"]
        execution.plan = plan
        with self._lock:
            self.executions[exec_id] = execution
        self.advance(execution, by_poll=False)  # a one-step plan is done at once
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
