"""VLM Run webhooks: verify the signature, re-fetch the execution, apply the same conditional update.

VLM Run signs ``X-VLMRun-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` and signs no timestamp,
so a replayed callback carries a valid signature: it is harmless because the body is never trusted
(the execution is re-fetched by id) and the update is conditional (a job never moves backwards).
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

if TYPE_CHECKING:
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
        self, secret: Callable[[], str], store: JobStore, tracker: Tracker, vlmrun: Callable[[], VlmRunClient]
    ) -> None:
        self._secret = secret
        self._store = store
        self._tracker = tracker
        self._vlmrun = vlmrun

    def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        """Returns (HTTP status, JSON body)."""
        if not verify_signature(self._secret(), body, signature):
            logger.warning("webhook rejected: missing, malformed or wrong signature")
            return UNAUTHORIZED
        try:
            payload = json.loads(body)
            execution_id = str(payload.get("id") or payload["execution_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "Bad request"}
        job = self._store.find_by_execution(execution_id)
        if job is None:
            # Not ours (or already expired): acknowledge so VLM Run stops retrying, change nothing.
            logger.info("webhook for unknown execution", extra={"execution_id": execution_id})
            return 200, {"status": "ignored"}
        if job.status not in IN_FLIGHT and job.status != Status.RECEIVED:
            return 200, {"status": "unchanged"}  # already final: a replay costs no request
        execution = self._vlmrun().get_execution(execution_id)  # the body is a hint, never the truth
        result = self._tracker.apply(job, execution, count_poll=False)
        logger.info("webhook applied", extra={"job_id": job.job_id, "remote": execution.status, "result": result})
        return 200, {"status": result}
