"""Events for integrations: ``Job Started``, ``Job Completed``, ``Job Failed`` on EventBridge.

One detail schema for all three, versioned (``schema``: ``vlmwatch.job-event/v1``): fields are only ever
added within a version; a change of meaning gets a new version. Delivery is at least once (a retried
delivery emits again): consumers key on ``job_id`` + ``detail-type``.

``Job Started`` is emitted when an execution is recorded for a job; ``Job Completed`` / ``Job Failed``
when its result / error document has been written (``document`` is where). A failed ``Job Started``
emission is logged and counted, never allowed to undo a submit: the job's row is the record.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, Field

from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import RETRYABLE

logger = logging.getLogger(__name__)

EVENT_SOURCE = "vlmwatch"
SCHEMA = "vlmwatch.job-event/v1"
DetailType = Literal["Job Started", "Job Completed", "Job Failed"]


class SourceObject(BaseModel):
    bucket: str
    key: str
    version_id: str | None = None


class JobEventDetail(BaseModel):
    """The ``detail`` of every vlmwatch event (schema ``vlmwatch.job-event/v1``)."""

    schema_: str = Field(SCHEMA, alias="schema")
    job_id: str
    # started: "submitted"; completed: "completed"; failed: "failed" or "timed_out".
    status: str
    source: SourceObject
    execution_id: str | None = None
    rule: str | None = None
    agent: str | None = None
    received_at: int | None = None
    submitted_at: int | None = None
    document: str | None = None  # s3:// URI of the result or error document (Completed / Failed)
    error: str | None = None  # Failed only: why

    model_config = {"populate_by_name": True}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def json_schema_v1(cls) -> dict[str, Any]:
        """The JSON Schema published as ``docs/job-event.v1.schema.json``."""
        schema = cls.model_json_schema(by_alias=True)
        schema["$id"] = "https://github.com/vlmwatch/vlmwatch/docs/job-event.v1.schema.json"
        schema["title"] = SCHEMA
        return schema


def detail_for(job: Job, *, status: str | None = None, document: str | None = None) -> JobEventDetail:
    route = job.route
    return JobEventDetail(
        schema=SCHEMA,
        job_id=job.job_id,
        status=status or job.status.value,
        source=SourceObject(bucket=job.bucket, key=job.key, version_id=job.version_id),
        execution_id=job.execution_id,
        rule=route.rule if route else None,
        agent=route.agent if route else None,
        received_at=job.created_at,
        submitted_at=job.submitted_at,
        document=document,
        error=job.error if job.status in RETRYABLE else None,
    )


class JobEvents:
    """Puts job events on an EventBridge bus.

    Args:
        client: zero-argument callable returning an ``events`` client (built on first use).
        bus: the event bus name; None or "" turns events off.
    """

    def __init__(self, client: Any, bus: str | None) -> None:
        self._client = client
        self._bus = bus

    @property
    def enabled(self) -> bool:
        return bool(self._bus)

    def emit(self, detail_type: DetailType, detail: JobEventDetail) -> None:
        """Put one event.

        Raises:
            RuntimeError: EventBridge rejected it (the caller decides whether that fails its work).
        """
        if not self._bus:
            return
        result = self._client().put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": detail.to_json(),
                    "EventBusName": self._bus,
                }
            ]
        )
        if result.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge rejected the {detail_type} event: {result['Entries']}")

    def started(self, job: Job) -> bool:
        """``Job Started``; best effort (logged on failure). Returns whether it was put."""
        try:
            self.emit("Job Started", detail_for(job, status="submitted"))
        except Exception:  # the submit stands whatever EventBridge says; the row is the record
            logger.exception("Job Started event not emitted", extra={"job_id": job.job_id})
            return False
        return True
