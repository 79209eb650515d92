"""VLM Run webhooks: verify the signature, re-fetch the execution, apply the same conditional update.

VLM Run signs ``X-VLMRun-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` and signs no timestamp,
so a replayed callback carries a valid signature: the body is never trusted (the execution is re-fetched
by id) and the update is conditional (a job never moves backwards). A replay also costs nothing: a body
this process applied already, or one claiming a status the row already holds, is answered without a
request; a re-fetch goes through the request budget, and a 429 makes the job wait on its row (202).

The callback URL we send with each submit attempt carries ``job_id``, ``attempt`` and our own HMAC
``token`` over both (keyed by a key derived from the signing secret, see :func:`.request.callback_token`).
A signed callback to such a URL is the one piece of evidence the API offers of which execution a POST
created: it lets a job whose submit was ambiguous (or whose POST response has not been recorded yet)
adopt its execution at once. Body and URL are signed separately, so one job's genuine body can be sent to
another job's URL: :meth:`.evidence.Evidence.refusal` refuses an execution another job tracks, one created
outside the attempt's claim window, or one echoing an input the job never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.vlmrun.models import SAFE_ID
from vlmwatch.core.errors import SecretUnavailableError, VlmRunError, VlmRunRateLimitedError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import IN_FLIGHT, REMOTE_KNOWN, Status, can_move, local_status
from vlmwatch.flows import pacing
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
        self._seen = RecentCallbacks()

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
            claimed = payload.get("status")
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "Bad request"}
        if not SAFE_ID.match(execution_id):
            return 400, {"message": "Bad request"}  # it would go into a URL path
        digest = hashlib.sha256(body).hexdigest()
        if self._seen.seen(digest):
            return 200, {"status": "unchanged"}  # this very callback was applied here already: no request
        evidence = self._attempt_from(query, secrets)
        if evidence is not None and self._submitter is not None:
            job_id, attempt = evidence
            job = self._store.get(job_id)
            if job is None:
                return 200, {"status": "ignored"}
            if execution_id in job.orphan_execution_ids or execution_id in job.previous_execution_ids:
                return 200, {"status": "unchanged"}  # on record already: a replay costs no request
            if job.execution_id != execution_id and (job.status == Status.RECEIVED or job.execution_id):
                return self._adopt(job, execution_id, attempt, digest)
        else:
            job = self._store.find_by_execution(execution_id)
        if job is None:
            # Not ours (or already expired): acknowledge so VLM Run stops retrying, change nothing.
            logger.info("webhook for unknown execution", extra={"execution_id": execution_id})
            return 200, {"status": "ignored"}
        if job.status not in IN_FLIGHT or already_applied(job, claimed):
            return 200, {"status": "unchanged"}  # already final, or the row says what the body says: no request
        pressure = self._submitter.pressure if self._submitter is not None else None
        if pressure is not None and pacing.hold(pressure, self._store, job.job_id, "poll"):
            return 202, {"status": "deferred"}  # the budget or the breaker says wait: the poller takes it then
        try:
            execution = self._vlmrun().get_execution(execution_id)  # the body is a hint, never the truth
        except VlmRunRateLimitedError as exc:
            if pressure is not None:
                pacing.defer(pressure, self._store, job.job_id, exc)
            else:
                self._store.reschedule(job.job_id, self._store.now() + int(exc.retry_after) + 1, error=str(exc))
            return 202, {"status": "deferred"}  # the job waits on its row; the poller picks it up past Retry-After
        except (VlmRunError, SecretUnavailableError) as exc:
            logger.warning("webhook could not re-fetch the execution", extra={"job_id": job.job_id, "error": str(exc)})
            return UNAVAILABLE  # VLM Run retries the callback; the safety-net poll is still scheduled
        result = self._tracker.apply(job, execution, count_poll=False)
        self._seen.add(digest)
        logger.info("webhook applied", extra={"job_id": job.job_id, "remote": execution.status, "result": result})
        return 200, {"status": result}

    def _adopt(self, job: Job, execution_id: str, attempt: int, digest: str) -> tuple[int, dict[str, Any]]:
        """A callback to one attempt's URL for an execution the row does not track: evidence, if nothing refutes it."""
        assert self._submitter is not None
        other = self._submitter.evidence.other_owner(job.job_id, execution_id)
        if other is not None:
            # Another job's genuine signed body sent to this job's URL: never adopted, and no request spent.
            logger.warning(
                "evidence refused: another job tracks or recorded this execution",
                extra={"job_id": job.job_id, "execution_id": execution_id, "owner": other[0], "reason": other[1]},
            )
            return 200, {"status": "refused"}
        pressure = self._submitter.pressure
        # Evidence cannot wait on the row (nothing else brings it back): if VLM Run may not be asked now,
        # answer 503 and VLM Run sends the callback again later.
        if pressure.admit("poll") is not None:
            return UNAVAILABLE
        try:
            execution = self._vlmrun().get_execution(execution_id)
        except VlmRunRateLimitedError as exc:
            pressure.rate_limited(exc.retry_after)
            return UNAVAILABLE
        except (VlmRunError, SecretUnavailableError) as exc:
            logger.warning("webhook could not fetch the evidence", extra={"job_id": job.job_id, "error": str(exc)})
            return UNAVAILABLE
        adopted = self._submitter.evidence.adopt(job.job_id, execution, attempt)
        self._seen.add(digest)
        if adopted != "adopted":
            return 200, {"status": adopted}
        fresh = self._store.get(job.job_id) or job
        result = self._tracker.apply(fresh, execution, count_poll=False)
        logger.info("webhook adopted", extra={"job_id": job.job_id, "remote": execution.status, "result": result})
        return 200, {"status": "adopted", "result": result}


def already_applied(job: Job, claimed: object) -> bool:
    """The body claims a status the row already holds (or one behind it): a replay, nothing to fetch.

    The claim is only a hint; it can only save a request, never move the row (that takes a re-fetch).
    """
    if not isinstance(claimed, str) or claimed not in REMOTE_KNOWN:
        return False  # no usable hint: re-fetch
    if claimed == job.remote_status:
        return True
    target = local_status(claimed, job.status)
    return target == job.status or not can_move(job.status, target)


class RecentCallbacks:
    """Digests of the callbacks this process applied lately (bounded): an exact replay costs no request."""

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._digests: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, digest: str) -> bool:
        with self._lock:
            return digest in self._digests

    def add(self, digest: str) -> None:
        with self._lock:
            self._digests[digest] = None
            while len(self._digests) > self._size:
                self._digests.popitem(last=False)
