"""VLM Run webhooks: verify the signature, re-fetch the execution, apply the same conditional update.

VLM Run signs ``X-VLMRun-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` and signs no timestamp,
so a replayed callback carries a valid signature: it is harmless because the body is never trusted
(the execution is re-fetched by id) and the update is conditional (a job never moves backwards).

The callback URL we send with each submit attempt carries ``job_id``, ``attempt`` and our own HMAC
``token`` over both. A signed callback to such a URL is the one piece of evidence the API offers of
which execution a POST created: it lets a job whose submit was ambiguous (or whose POST response
has not been recorded yet) adopt its execution at once, found by key, with no index lag.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.vlmrun.models import SAFE_ID
from vlmwatch.core.errors import SecretUnavailableError
from vlmwatch.core.lifecycle import IN_FLIGHT, Status
from vlmwatch.flows.request import callback_token

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.flows.submit import Submitter
    from vlmwatch.flows.tracking import Tracker

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-vlmrun-signature"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# What an unauthenticated caller learns: nothing about why.
UNAUTHORIZED = (401, {"message": "Unauthorized"})
UNAVAILABLE = (503, {"message": "Service Unavailable"})


class ThrottledLog:
    """At most one log line per ``interval`` seconds for a repeated event, with the count it stands for.

    The webhook URL is public: a flood of forged requests must not become a flood of log lines (each one
    paid for in CloudWatch Logs ingestion).
    """

    def __init__(
        self,
        log: Callable[..., None],
        message: str,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._message = message
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, **fields: object) -> bool:
        """Count one occurrence; returns True when it was logged."""
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval:
                self._suppressed += 1
                return False
            count, self._suppressed, self._last = self._suppressed + 1, 0, now
        self._log(self._message, extra={"occurrences": count, "window_seconds": self._interval, **fields})
        return True


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=<hex>`` and the HMAC of ``body`` matches, compared in constant time."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    received = header[len("sha256=") :]
    if not _HEX64.match(received):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.lower().encode(), expected.encode())


class WebhookReceiver:
    """Handles one callback.

    Args:
        secrets: zero-argument callable returning the webhook secrets a callback may be signed with
            (current, then previous during a rotation; cached), or raising ``SecretUnavailableError``.
        store: the job table.
        tracker: applies the re-fetched execution (the pollers' code path).
        vlmrun: zero-argument callable returning the VLM Run client.
    """

    def __init__(
        self,
        secrets: Callable[[], list[str]],
        store: JobStore,
        tracker: Tracker,
        vlmrun: Callable[[], VlmRunClient],
        submitter: Submitter | None = None,
    ) -> None:
        self._secrets = secrets
        self._rejected = ThrottledLog(
            logger.warning, "webhook requests rejected: missing, malformed or wrong signature"
        )
        self._unconfigured = ThrottledLog(logger.error, "webhook secret unavailable: every callback is refused")
        self._store = store
        self._tracker = tracker
        self._vlmrun = vlmrun
        self._submitter = submitter

    def _attempt_from(self, query: dict[str, str] | None, secrets: list[str]) -> tuple[str, int] | None:
        """(job id, attempt) when the URL carries our valid token for them, else None."""
        if not query:
            return None
        job_id, attempt, token = query.get("job_id"), query.get("attempt"), query.get("token")
        if not job_id or not attempt or not token or not attempt.isdigit() or len(job_id) > 80:
            return None
        # Any candidate may have made it: a job submitted before a rotation carries a token of the old secret.
        matches = [
            hmac.compare_digest(token.encode(), callback_token(secret, job_id, int(attempt)).encode())
            for secret in secrets
        ]
        return (job_id, int(attempt)) if any(matches) else None

    def handle(
        self, body: bytes, signature: str | None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Returns (HTTP status, JSON body)."""
        try:
            secrets = self._secrets()
        except SecretUnavailableError as exc:
            # Cached by the secret store: a flood of callbacks costs no Secrets Manager call per request.
            self._unconfigured(error=str(exc))
            return UNAVAILABLE  # VLM Run retries a 5xx: nothing is lost while the secret is being fixed
        # Every candidate is checked (no early exit), each in constant time.
        if not any([verify_signature(secret, body, signature) for secret in secrets]):
            self._rejected()
            return UNAUTHORIZED
        try:
            payload = json.loads(body)
            execution_id = str(payload.get("id") or payload["execution_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "Bad request"}
        if not SAFE_ID.match(execution_id):
            return 400, {"message": "Bad request"}  # it would go into a URL path
        evidence = self._attempt_from(query, secrets)
        if evidence is not None and self._submitter is not None:
            job_id, attempt = evidence
            job = self._store.get(job_id)
            if job is None:
                return 200, {"status": "ignored"}
            if job.execution_id != execution_id and (job.status == Status.RECEIVED or job.execution_id):
                # Ours (the token says so) but not recorded yet, or not the execution we track.
                execution = self._vlmrun().get_execution(execution_id)
                adopted = self._submitter.evidence.adopt(job_id, execution, attempt)
                if adopted != "adopted":
                    return 200, {"status": adopted}
                job = self._store.get(job_id) or job
                result = self._tracker.apply(job, execution, count_poll=False)
                logger.info("webhook adopted", extra={"job_id": job_id, "remote": execution.status, "result": result})
                return 200, {"status": "adopted", "result": result}
        else:
            job = self._store.find_by_execution(execution_id)
        if job is None:
            # Not ours (or already expired): acknowledge so VLM Run stops retrying, change nothing.
            logger.info("webhook for unknown execution", extra={"execution_id": execution_id})
            return 200, {"status": "ignored"}
        if job.status not in IN_FLIGHT:
            return 200, {"status": "unchanged"}  # already final (a replay costs no request), or not ours yet
        execution = self._vlmrun().get_execution(execution_id)  # the body is a hint, never the truth
        result = self._tracker.apply(job, execution, count_poll=False)
        logger.info("webhook applied", extra={"job_id": job.job_id, "remote": execution.status, "result": result})
        return 200, {"status": result}
