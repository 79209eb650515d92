"""S3 "object created" events in every shape the ingest accepts, normalised to :class:`S3ObjectRef`.

Shapes: S3 → EventBridge → SQS (the default wiring), S3 notification → SQS, S3 notification → SNS
→ SQS, and a direct S3 notification invoking the function. Classic S3 notifications URL-encode the
key; the EventBridge form carries it as delivered. ``S3ObjectRef.key_candidates`` gives both readings,
the one the shape means first; the ingest keeps a reading only if the HEAD's version or ETag is the
event's (``docs/a+b.txt`` must never become ``docs/a b.txt``, another file).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, Field, ValidationError

from vlmwatch.core.errors import UnsupportedEventError
from vlmwatch.core.routing import ServiceTier


class S3ObjectRef(BaseModel):
    """One created object, as an event described it."""

    model_config = {"frozen": True}

    bucket: str
    key: str
    key_encoded: bool
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    # vlmwatch's own extension on messages it sends itself (``vlmwatch backfill --service-tier``,
    # ``vlmwatch reprocess``): the tier, which run of the version this is, and the configuration to use.
    service_tier: ServiceTier | None = None
    run: int = Field(default=1, ge=1)
    config_version: int | None = Field(default=None, ge=0)
    # The key is exactly this string (one reading already chosen): no other spelling is tried.
    exact: bool = False

    def key_candidates(self) -> list[str]:
        """Keys to try, most likely first: a notification's key decoded, then raw; an EventBridge key as
        delivered, then decoded (see PITFALLS). Only one of them can match the event's version or ETag."""
        if self.exact:
            return [self.key]
        decoded = unquote_plus(self.key)
        ordered = [decoded, self.key] if self.key_encoded else [self.key, decoded]
        return list(dict.fromkeys(ordered))

    def spelled(self, key: str) -> S3ObjectRef:
        """This event, read with ``key`` as its object's key (and no other)."""
        return self.model_copy(update={"key": key, "exact": True})


def refs_from_body(body: str | dict[str, Any]) -> list[S3ObjectRef]:
    """Object refs in one SQS message body (or a direct invocation event).

    Returns an empty list for messages that are not about created objects (S3 test events,
    deletions); raises :class:`UnsupportedEventError` for anything unrecognisable, so the message
    goes to the DLQ with a reason instead of being dropped.
    """
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise UnsupportedEventError(f"message body is not JSON: {body[:200]!r}") from exc
    else:
        data = body
    if not isinstance(data, dict):
        raise UnsupportedEventError("message body is not a JSON object")

    if data.get("Type") == "Notification" and "Message" in data:  # SNS envelope
        return refs_from_body(data["Message"])
    if data.get("Event") == "s3:TestEvent":
        return []
    if data.get("source") == "aws.s3" and "detail" in data:
        return _with_extension(_from_eventbridge(data), data.get("vlmwatch"))
    if isinstance(data.get("Records"), list):
        return [ref for record in data["Records"] for ref in _from_notification(record)]
    raise UnsupportedEventError(f"not an S3 event: top-level keys {sorted(data)[:10]}")


_EXTENSION = ("service_tier", "run", "config_version")


def _with_extension(refs: list[S3ObjectRef], extension: Any) -> list[S3ObjectRef]:
    """Apply vlmwatch's own message extension (``{"vlmwatch": {"service_tier", "run", "config_version"}}``),
    validated."""
    if not isinstance(extension, dict):
        return refs
    fields = {name: extension[name] for name in _EXTENSION if extension.get(name) is not None}
    if not fields:
        return refs
    try:
        return [S3ObjectRef.model_validate({**ref.model_dump(), **fields}) for ref in refs]
    except ValidationError as exc:
        shown = json.dumps(fields)[:120]
        reason = exc.errors()[0]["msg"]
        raise UnsupportedEventError(f"invalid vlmwatch extension {shown} in a message: {reason}") from exc


def _from_eventbridge(event: dict[str, Any]) -> list[S3ObjectRef]:
    if event.get("detail-type") != "Object Created":
        return []
    detail = event["detail"]
    obj = detail.get("object") or {}
    try:
        return [
            S3ObjectRef(
                bucket=detail["bucket"]["name"],
                key=obj["key"],
                key_encoded=False,
                version_id=obj.get("version-id") or None,
                # AWS documents "etag"; moto sends "eTag".
                etag=obj.get("etag") or obj.get("eTag"),
                size=obj.get("size"),
            )
        ]
    except (KeyError, TypeError) as exc:
        raise UnsupportedEventError(f"EventBridge S3 event without bucket/key: {exc}") from exc


def _from_notification(record: dict[str, Any]) -> list[S3ObjectRef]:
    if record.get("eventSource") != "aws:s3":
        raise UnsupportedEventError(f"record from {record.get('eventSource')!r}, expected aws:s3")
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        return []
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    try:
        return [
            S3ObjectRef(
                bucket=s3["bucket"]["name"],
                key=obj["key"],
                key_encoded=True,
                version_id=obj.get("versionId") or None,
                etag=obj.get("eTag") or obj.get("etag"),
                size=obj.get("size"),
            )
        ]
    except (KeyError, TypeError) as exc:
        raise UnsupportedEventError(f"S3 notification without bucket/key: {exc}") from exc
