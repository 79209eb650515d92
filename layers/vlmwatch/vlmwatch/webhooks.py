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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.jobs import IN_FLIGHT, JobStore, Status
from vlmwatch.submit import callback_token

if TYPE_CHECKING:
    from vlmwatch.submit import Submitter
    from vlmwatch.tracking import Tracker
    from vlmwatch.vlmrun import VlmRunClient

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-vlmrun-signature"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# What an unauthenticated caller learns: nothing about why.
UNAUTHORIZED = (401, {"message": "Unauthorized"})


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
        secret: zero-argument callable returning the webhook secret (from Secrets Manager, cached).
        store: the job table.
        tracker: applies the re-fetched execution (the pollers' code path).
        vlmrun: zero-argument callable returning the VLM Run client.
    """

    def __init__(
        self,
        secret: Callable[[], str],
        store: JobStore,
        tracker: Tracker,
        vlmrun: Callable[[], VlmRunClient],
        submitter: Submitter | None = None,
    ) -> None:
        self._secret = secret
        self._store = store
        self._tracker = tracker
        self._vlmrun = vlmrun
        self._submitter = submitter

    def _attempt_from(self, query: dict[str, str] | None) -> tuple[str, int] | None:
        """(job id, attempt) when the URL carries our valid token for them, else None."""
        if not query:
            return None
        job_id, attempt, token = query.get("job_id"), query.get("attempt"), query.get("token")
        if not job_id or not attempt or not token or not attempt.isdigit() or len(job_id) > 80:
            return None
        expected = callback_token(self._secret(), job_id, int(attempt))
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return job_id, int(attempt)

    def handle(
        self, body: bytes, signature: str | None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Returns (HTTP status, JSON body)."""
        if not verify_signature(self._secret(), body, signature):
            logger.warning("webhook rejected: missing, malformed or wrong signature")
            return UNAUTHORIZED
        try:
            payload = json.loads(body)
            execution_id = str(payload.get("id") or payload["execution_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "Bad request"}
        evidence = self._attempt_from(query)
        if evidence is not None and self._submitter is not None:
            job_id, attempt = evidence
            job = self._store.get(job_id)
            if job is None:
                return 200, {"status": "ignored"}
            if job.execution_id != execution_id and (job.status == Status.RECEIVED or job.execution_id):
                # Ours (the token says so) but not recorded yet, or not the execution we track.
                execution = self._vlmrun().get_execution(execution_id)
                adopted = self._submitter.adopt(job_id, execution, attempt)
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
