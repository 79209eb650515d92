"""A job: one object version's trip through VLM Run, as one row of the job table (the row model)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, field_validator

from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.lifecycle import Status
from vlmwatch.core.routing import Route

# Rows whose id starts with this are not jobs: the request budget's windows, the circuit breaker.
CONTROL_ROW_PREFIX = "#"


def is_control_row(job_id: str) -> bool:
    return job_id.startswith(CONTROL_ROW_PREFIX)


class Job(BaseModel):
    """A row of the job table."""

    model_config = {"extra": "ignore"}

    job_id: str
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    # Which run of this object version (1: the upload's; `vlmwatch reprocess` starts 2, 3, ...).
    run: int = 1
    size: int | None = None
    content_type: str | None = None
    route: Route | None = None
    status: Status
    outcome: Status | None = None
    remote_status: str | None = None
    execution_id: str | None = None
    attempts: int = 0
    poll_count: int = 0
    next_poll_at: int | None = None
    deadline_at: int | None = None
    # The circuit breaker's total downtime when the job started: its deadline moves by any added since.
    downtime_mark: int | None = None
    submit_started_at: int | None = None
    error: str | None = None
    skip_reason: str | None = None
    result_uri: str | None = None
    error_uri: str | None = None
    usage: dict[str, Any] | None = None
    credits_used: float | None = None  # the execution's usage, as numbers (what the work cost)
    elements_processed: int | None = None
    execution_snapshot: str | None = None  # the completed execution as JSON, until delivered
    # Submit attempts whose outcome was never known (timeout after send, 5xx, a crash while claimed):
    # each may have created an execution that no evidence ties to this job (a possible orphan).
    ambiguous_attempts: list[int] = Field(default_factory=list)
    # "<attempt>:<fingerprint of the input reference it sent>" for ambiguous attempts (see flows.request).
    ambiguous_inputs: list[str] = Field(default_factory=list)
    # Executions known to belong to this job that are not the one delivered (late evidence).
    orphan_execution_ids: list[str] = Field(default_factory=list)
    input_file_id: str | None = None  # upload mode: the uploaded copy, reused by every submit attempt
    delivery_attempts: int = 0
    # `vlmwatch retry`: how often this job was reopened, the attempt count when it last was (callbacks for
    # attempts up to it belong to an execution that already ended), and the executions it had before.
    retries: int = 0
    retried_at_attempt: int = 0
    previous_execution_ids: list[str] = Field(default_factory=list)
    delivery_error: str | None = None
    last_poll_error: str | None = None
    created_at: int
    updated_at: int
    submitted_at: int | None = None
    finished_at: int | None = None
    delivered_at: int | None = None

    @field_validator("route", "usage", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
        return cls.model_validate({k: _plain(v) for k, v in item.items()})

    def to_item(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        data = {k: v for k, v in data.items() if v != []}  # list attributes appear when first appended to
        # Nested JSON (schemas with floats) is stored as a string: DynamoDB wants Decimals otherwise.
        for name in ("route", "usage"):
            if name in data:
                data[name] = json.dumps(data[name], separators=(",", ":"), sort_keys=True)
        return data

    @property
    def source_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version(self) -> ObjectVersion:
        return ObjectVersion.of(self.version_id, self.etag)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
