"""VLM Run's API objects as vlmwatch reads them (lenient: ``extra`` kept, unknown statuses kept as text)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from vlmwatch.core.lifecycle import REMOTE_ENDED
from vlmwatch.core.redact import sanitize, strip_signed_urls

# Ids from responses go into URL paths: UUIDs and ``file_...``-style ids, never a '/', '.' or '%'.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def safe_id(value: str, what: str = "id") -> str:
    """``value`` if it is safe to put in a URL path.

    Raises:
        ValueError: it is not (a pydantic validator turns this into a validation error of the response).
    """
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise ValueError(f"{what} {sanitize(repr(value), 80)} is not a valid VLM Run id")
    return value


class Usage(BaseModel):
    model_config = {"extra": "allow"}

    elements_processed: int | None = None
    element_type: str | None = None
    credits_used: float | None = None
    steps: int | None = None
    message: str | None = None
    duration_seconds: float | None = None


class Execution(BaseModel):
    """An agent execution as ``POST /agent/execute`` and ``GET /agent/executions/{id}`` return it."""

    model_config = {"extra": "allow"}

    id: str
    name: str | None = None
    status: str
    created_at: datetime | None = None
    completed_at: datetime | None = None
    response: Any = None
    usage: Usage | None = None
    error: Any = None
    # The agent-execution docs show an execution echoing the inputs it was created with (the SDK's model
    # drops them): where present, the exact input reference is evidence of which submit made it.
    inputs: Any = None

    @field_validator("id")
    @classmethod
    def _safe(cls, value: str) -> str:
        return safe_id(value, "execution id")

    @model_serializer(mode="wrap")
    def _stored_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """What is kept of an execution (the row's snapshot, until delivered): the known fields only, never
        the echoed ``inputs`` or ``config`` (they hold the presigned URL one attempt sent), and no signed URL's
        query anywhere in the response or error. The object in memory keeps everything (``inputs`` is evidence)."""
        data = handler(self)
        kept = {name: data[name] for name in _STORED_FIELDS if name in data}
        for name in ("response", "error"):
            kept[name] = _without_signed_urls(kept.get(name))
        return kept

    @property
    def has_ended(self) -> bool:
        return self.status in REMOTE_ENDED

    def error_message(self) -> str:
        """The best human explanation VLM Run gave for a failure, credentials stripped."""
        return sanitize(self._error_message())

    def _error_message(self) -> str:
        for candidate in (self.error, (self.response or {}).get("error") if isinstance(self.response, dict) else None):
            if isinstance(candidate, str) and candidate:
                return candidate
            if isinstance(candidate, dict):
                msg = candidate.get("message") or candidate.get("detail")
                if msg:
                    return str(msg)
        if self.usage and self.usage.message:
            return self.usage.message
        return f"execution {self.id} ended with status {self.status} and no error message"


class ArtifactItem(BaseModel):
    model_config = {"extra": "allow"}

    object_id: str
    filename: str | None = None
    source: str | None = None


class ArtifactList(BaseModel):
    namespace_id: str | None = None
    items: list[ArtifactItem] = Field(default_factory=list)


class FileInfo(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    filename: str | None = None
    bytes: int | None = None
    public_url: str | None = None


class PresignedUpload(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    url: str
    content_type: str | None = None


# Execution's fields that are stored: everything it declares except ``inputs``; extras are never stored.
_STORED_FIELDS = ("id", "name", "status", "created_at", "completed_at", "response", "usage", "error")


def _without_signed_urls(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return strip_signed_urls(value)
    if depth >= 100 and isinstance(value, dict | list):
        return "<redacted: nested more than 100 levels deep>"  # never kept unchecked
    if isinstance(value, dict):
        return {key: _without_signed_urls(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_signed_urls(item, depth + 1) for item in value]
    return value


@dataclass
class ArtifactStream:
    """An artifact being downloaded: read ``chunks`` once."""

    object_id: str
    content_type: str
    length: int | None
    chunks: Iterator[bytes]
