"""Delivery: a job that reached a terminal status gets its documents, then becomes ``delivered``.

Artifacts are bounded and budgeted. Only ids VLM Run's ``GET /artifacts/list`` confirms for the execution
are fetched (a string that merely looks like an id is not a download), at most ``max_artifacts`` of them
(the rest are listed in the document's ``missing_artifacts`` with the reason), and every request goes
through the deployment's request budget and breaker. When VLM Run says 429, or the budget is spent, the
delivery waits on its row (the sweeper delivers it when due) instead of failing the stream batch; what it
already wrote is kept and not fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.breaker import CircuitBreaker
from vlmwatch.adapters.job_events import DetailType, JobEvents, detail_for
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.ledger import CreditLedger
from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch.adapters.s3source import SourceReader
from vlmwatch.adapters.throttle import Backpressure
from vlmwatch.adapters.vlmrun.gating import RequestDeferredError
from vlmwatch.adapters.vlmrun.models import Execution
from vlmwatch.core.errors import TooLargeError, VlmRunRateLimitedError, VlmRunRejectedError
from vlmwatch.core.job import Job
from vlmwatch.core.layout import artifact_refs
from vlmwatch.core.lifecycle import FINISHED, Status
from vlmwatch.core.schedule import Backoff

if TYPE_CHECKING:
    from vlmwatch.adapters.vlmrun.client import VlmRunClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One delivered job: where its document is, how it ended, and seconds from received to delivered."""

    job_id: str
    uri: str
    outcome: str
    seconds: int
    rule: str | None = None
    agent: str | None = None
    credits: float = 0.0


class Deliverer:
    """Writes outputs for finished jobs.

    Args:
        store: the job table.
        writer: the output writer.
        vlmrun: zero-argument callable returning the VLM Run client.
        events: where ``Job Completed`` / ``Job Failed`` go (:class:`~vlmwatch.notify.JobEvents`), or None.
        source: HEADs of the input bucket (which version is current), or None to skip the stable-path copy.
        breaker: the account's circuit breaker (downloads wait while it is open), or None.
        ledger: the monthly credit totals (each delivered job's credits are added once), or None.
        retry_seconds: when the sweeper tries again after a delivery failed (doubling, up to 8x).
        max_bytes: the largest artifact copied; a larger one is listed in the result document's
            ``missing_artifacts`` with the reason.
        pressure: the deployment's request budget and breaker (a 429 or a spent budget makes the delivery
            wait on its row), or None (then ``breaker`` alone gates it).
        max_artifacts: the most artifacts copied per document; the rest are listed as missing.
    """

    def __init__(
        self,
        store: JobStore,
        writer: OutputWriter,
        vlmrun: Callable[[], VlmRunClient],
        events: JobEvents | None = None,
        *,
        source: SourceReader | None = None,
        breaker: CircuitBreaker | None = None,
        ledger: CreditLedger | None = None,
        retry_seconds: int = 60,
        max_bytes: int = 5 * 1024**3,
        pressure: Backpressure | None = None,
        max_artifacts: int = 100,
    ) -> None:
        self._max_bytes = max_bytes
        self._pressure = pressure
        self._max_artifacts = max(0, max_artifacts)
        self._source = source
        self._breaker = breaker
        self._ledger = ledger
        self._retry = Backoff(base=retry_seconds, cap=8 * retry_seconds)
        self._store = store
        self._writer = writer
        self._vlmrun = vlmrun
        self._events = events

    def deliver(self, job_id: str) -> Delivery | None:
        """Deliver one job. Idempotent: a replayed stream record rewrites the same objects or does nothing.

        Returns what was delivered, or None if the job needs nothing (already delivered).
        Raises on any failure so the stream batch retries (and, in the end, the on-failure destination keeps it).
        """
        job = self._store.get(job_id)
        if job is None or job.status not in FINISHED:
            logger.info("nothing to deliver", extra={"job_id": job_id, "status": getattr(job, "status", None)})
            return None
        if (
            job.status == Status.COMPLETED
            and self._pressure is None
            and self._breaker is not None
            and self._needs_vlmrun(job)
        ):
            # Its artifacts come from VLM Run: while the account's breaker is shut, the job waits on its
            # row (the sweeper delivers it when due) instead of failing a stream batch over and over.
            wait_until = self._breaker.admit("fetch")
            if wait_until is not None:
                self._store.reschedule(
                    job.job_id, wait_until, error=f"delivery waiting: {self._breaker.state().describe()}"
                )
                return None
        try:
            if not self._reserved(job):
                return None
            return self._deliver(job)
        except VlmRunRateLimitedError as exc:
            # VLM Run said 429, or our budget/breaker held the request back before it was sent: not a
            # failure. The job waits on its row and the sweeper delivers it when due; the stream batch
            # succeeds (nothing goes to the failed-deliveries queue for the account's limits).
            self._store.reschedule(job.job_id, self._wait_until(exc), error=f"delivery waiting: {exc}")
            return None
        except Exception as exc:
            # Recorded on the row and left in the sweeper's index: the stream retries too, and when its
            # retries run out (or its records expire after 24 h) the sweeper still delivers.
            retry_at = self._store.now() + int(self._retry.delay(job.delivery_attempts + 1))
            self._store.delivery_failed(job.job_id, f"{type(exc).__name__}: {exc}", retry_at)
            raise
        finally:
            if self._pressure is not None:
                self._pressure.forfeit()  # downloads reserved and not needed (or cut short) are given up

    def _deliver(self, job: Job) -> Delivery:
        now = self._store.now()
        detail_type: DetailType
        if job.status == Status.COMPLETED:
            key, detail_type = self._deliver_result(job, now), "Job Completed"
            uri = self._writer.uri(key)
            fields: dict[str, Any] = {"result_uri": uri, "delivered_at": now}
        else:
            key = self._writer.put_error(job, status=job.status.value, message=job.error or job.status.value, now=now)
            detail_type = "Job Failed"
            uri = self._writer.uri(key)
            fields = {"error_uri": uri, "delivered_at": now}
        if self._source is not None:
            source = self._source
            latest = self._writer.publish_latest(job, lambda: source.current_version(job.bucket, job.key))
            if latest:
                fields["latest_uri"] = self._writer.uri(latest)
        self._emit(job, detail_type, uri)
        moved = self._store.transition(
            job.job_id, Status.DELIVERED, set_fields=fields, remove_fields=("execution_snapshot", "delivery_error")
        )
        credits = job.credits_used or 0.0
        if moved and self._ledger is not None:
            # Once per job: only the delivery that moved it to `delivered` counts its credits.
            self._ledger.record(credits, failed=job.status != Status.COMPLETED)
        logger.info("delivered", extra={"job_id": job.job_id, "uri": uri, "outcome": job.status.value})
        route = job.route
        return Delivery(
            job_id=job.job_id,
            uri=uri,
            outcome=job.status.value,
            seconds=max(0, now - job.created_at),
            rule=route.rule if route else None,
            agent=route.agent if route else None,
            credits=credits,
        )

    def _reserved(self, job: Job) -> bool:
        """Take from the budget, at once, every VLM Run request this delivery needs (the artifact list and
        each download): a delivery then runs to its end instead of stopping halfway for want of budget and
        asking for the list again. False: not now; the job waits on its row."""
        if self._pressure is None or job.status != Status.COMPLETED:
            return True
        need = self._requests_needed(job)
        if not need:
            return True
        wait_until = self._pressure.admit("fetch", need)
        if wait_until is None:
            return True
        self._store.reschedule(job.job_id, wait_until, error=f"delivery {self._pressure.waiting_reason()}")
        return False

    def _requests_needed(self, job: Job) -> int:
        if not job.execution_snapshot:
            return 1  # the GET of the execution; its artifacts, if any, go through the gate one by one
        refs = artifact_refs(Execution.model_validate_json(job.execution_snapshot).response)
        if not refs:
            return 0
        assert job.execution_id is not None
        written = len(self._writer.written_artifacts(job, job.execution_id)) if self._tried_before(job) else 0
        return 1 + max(0, min(len(refs), self._max_artifacts) - written)

    def _wait_until(self, exc: VlmRunRateLimitedError) -> int:
        if isinstance(exc, RequestDeferredError):
            return exc.until
        if self._pressure is not None:
            return self._pressure.rate_limited(exc.retry_after)  # the process waits too, the budget shrinks
        return self._store.now() + max(1, int(exc.retry_after))

    @staticmethod
    def _needs_vlmrun(job: Job) -> bool:
        """Whether delivering this completed job asks VLM Run anything (a re-fetch, or artifacts)."""
        if not job.execution_snapshot:
            return True
        return bool(artifact_refs(Execution.model_validate_json(job.execution_snapshot).response))

    def _deliver_result(self, job: Job, now: int) -> str:
        assert job.execution_id is not None
        client = self._vlmrun()
        if job.execution_snapshot:
            execution = Execution.model_validate_json(job.execution_snapshot)
        else:  # too large to keep on the row: fetch it again
            execution = client.get_execution(job.execution_id)
        records = []
        wanted, missing = bounded_refs(client, job.execution_id, artifact_refs(execution.response), self._max_artifacts)
        # Written by an earlier try that then had to wait: kept, not fetched (nor paid for) again.
        done = self._writer.written_artifacts(job, job.execution_id) if wanted and self._tried_before(job) else {}
        # Artifacts first: the result document is the consumer's signal that everything is there.
        for object_id in wanted:
            if object_id in done:
                records.append(done[object_id])
                continue
            try:
                # Streamed: a video of any size passes through one multipart part's worth of memory.
                with client.open_artifact(job.execution_id, object_id) as stream:
                    records.append(self._writer.put_artifact_stream(job, stream, max_bytes=self._max_bytes))
            except VlmRunRejectedError as exc:
                # VLM Run says it has no such artifact (or the id was only text that looked like one):
                # retrying cannot help, so the result document says so instead of failing delivery.
                missing.append({"object_id": object_id, "error": exc.message})
            except TooLargeError as exc:
                missing.append({"object_id": object_id, "error": str(exc)})
        return self._writer.put_result(job, execution, records, now, missing=missing)

    @staticmethod
    def _tried_before(job: Job) -> bool:
        """Whether an earlier delivery of this job may have written artifacts (else no S3 listing is spent)."""
        return job.delivery_attempts > 0 or (job.last_poll_error or "").startswith("delivery waiting")

    def _emit(self, job: Job, detail_type: DetailType, uri: str) -> None:
        if self._events is not None:
            self._events.emit(detail_type, detail_for(job, document=uri))


def bounded_refs(
    client: VlmRunClient, execution_id: str, refs: list[str], cap: int
) -> tuple[list[str], list[dict[str, str]]]:
    """The artifact ids to fetch (confirmed by VLM Run's list, at most ``cap``) and those left out, with why."""
    if not refs:
        return [], []
    missing: list[dict[str, str]] = []
    try:
        listed = {item.object_id for item in client.list_artifacts(execution_id).items}
    except VlmRunRejectedError as exc:
        # No artifact list for this execution (the endpoint or the listing refused): nothing confirms
        # the ids, so each download (capped, budgeted) is asked directly and a 404 is recorded as missing.
        logger.warning("artifact list unavailable", extra={"execution_id": execution_id, "error": exc.message})
        confirmed = refs
    else:
        confirmed = [r for r in refs if r in listed]
        missing += [
            {
                "object_id": r,
                "error": "not an artifact of this execution (VLM Run's artifact list does not have it)",
            }
            for r in refs
            if r not in listed
        ]
    missing += [
        {"object_id": r, "error": f"not copied: more than {cap} artifacts in one response (MAX_ARTIFACTS)"}
        for r in confirmed[cap:]
    ]
    return confirmed[:cap], missing
