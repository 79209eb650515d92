"""Delivery: a job that reached a terminal status gets its documents, then becomes ``delivered``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.exceptions import VlmRunRejectedError
from vlmwatch.jobs import TERMINAL, Job, JobStore, Status
from vlmwatch.output import OutputWriter, artifact_refs
from vlmwatch.vlmrun import Execution

if TYPE_CHECKING:
    from vlmwatch.vlmrun import VlmRunClient

logger = logging.getLogger(__name__)

EVENT_SOURCE = "vlmwatch"


class Deliverer:
    """Writes outputs for finished jobs.

    Args:
        store: the job table.
        writer: the output writer.
        vlmrun: zero-argument callable returning the VLM Run client.
        events: a boto3 EventBridge client, or None to emit nothing.
        event_bus: the bus downstream consumers listen on.
    """

    def __init__(
        self,
        store: JobStore,
        writer: OutputWriter,
        vlmrun: Callable[[], VlmRunClient],
        events: Any = None,
        event_bus: str | None = "default",
    ) -> None:
        self._store = store
        self._writer = writer
        self._vlmrun = vlmrun
        self._events = events
        self._bus = event_bus

    def deliver(self, job_id: str) -> str | None:
        """Deliver one job. Idempotent: a replayed stream record rewrites the same objects or does nothing.

        Returns the URI of the document written, or None if the job needs nothing (already delivered).
        Raises on any failure so the stream batch retries (and, in the end, the on-failure destination keeps it).
        """
        job = self._store.get(job_id)
        if job is None or job.status not in TERMINAL:
            logger.info("nothing to deliver", extra={"job_id": job_id, "status": getattr(job, "status", None)})
            return None
        now = self._store.now()
        if job.status == Status.COMPLETED:
            uri, detail_type = self._deliver_result(job, now), "Job Completed"
            fields: dict[str, Any] = {"result_uri": uri, "delivered_at": now}
        else:
            uri = self._writer.put_error(job, status=job.status.value, message=job.error or job.status.value, now=now)
            detail_type = "Job Failed"
            fields = {"error_uri": uri, "delivered_at": now}
        self._emit(job, detail_type, uri)
        self._store.transition(job.job_id, Status.DELIVERED, set_fields=fields, remove_fields=("execution_snapshot",))
        logger.info("delivered", extra={"job_id": job.job_id, "uri": uri, "outcome": job.status.value})
        return uri

    def _deliver_result(self, job: Job, now: int) -> str:
        assert job.execution_id is not None
        client = self._vlmrun()
        if job.execution_snapshot:
            execution = Execution.model_validate_json(job.execution_snapshot)
        else:  # too large to keep on the row: fetch it again
            execution = client.get_execution(job.execution_id)
        records = []
        missing: list[dict[str, str]] = []
        # Artifacts first: the result document is the consumer's signal that everything is there.
        for object_id in artifact_refs(execution.response):
            try:
                artifact = client.get_artifact(job.execution_id, object_id)
            except VlmRunRejectedError as exc:
                # VLM Run says it has no such artifact (or the id was only text that looked like one):
                # retrying cannot help, so the result document says so instead of failing delivery.
                missing.append({"object_id": object_id, "error": exc.message})
                continue
            records.append(self._writer.put_artifact(job, artifact))
        return self._writer.put_result(job, execution, records, now, missing=missing)

    def _emit(self, job: Job, detail_type: str, uri: str) -> None:
        if self._events is None or not self._bus:
            return
        detail = {
            "job_id": job.job_id,
            "status": job.status.value,
            "source": {"bucket": job.bucket, "key": job.key, "version_id": job.version_id},
            "execution_id": job.execution_id,
            "document": uri,
            "error": job.error if job.status != Status.COMPLETED else None,
        }
        result = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus,
                }
            ]
        )
        if result.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge rejected the {detail_type} event: {result['Entries']}")
