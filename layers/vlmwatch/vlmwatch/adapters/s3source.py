"""The input object: one HEAD, read one way, for ingest (what is it?) and delivery (is it still current?)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify
from vlmwatch.core.errors import SourceUnreadableError
from vlmwatch.core.identity import ObjectVersion

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.core.s3events import S3ObjectRef


@dataclass(frozen=True)
class SourceObject:
    """What a HEAD of the input object told us."""

    key: str
    version: ObjectVersion
    size: int | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    age_seconds: int | None = None  # how long ago this version was written, by S3's own clock (its Date header)

    @classmethod
    def from_head(cls, key: str, head: Mapping[str, Any]) -> SourceObject:
        return cls(
            key=key,
            version=ObjectVersion.from_response(head),
            size=head.get("ContentLength"),
            content_type=head.get("ContentType"),
            metadata=dict(head.get("Metadata") or {}),
            age_seconds=_age(head),
        )


def _age(head: Mapping[str, Any]) -> int | None:
    """The object's age as S3 measures it: the response's ``Date`` minus ``LastModified`` (one clock, S3's,
    whatever ours says), or None when either is missing."""
    from email.utils import parsedate_to_datetime

    modified = head.get("LastModified")
    date = (head.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    if modified is None or not date:
        return None
    try:
        return int((parsedate_to_datetime(date) - modified).total_seconds())
    except (TypeError, ValueError):
        return None


class SourceReader:
    """HEADs of input objects.

    Without ``s3:ListBucket`` (which the roles do not have) S3 answers a HEAD of a missing key with 403,
    not 404: a 403 means "missing, or not ours to read", and each caller decides which it can live with.
    """

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def head(self, ref: S3ObjectRef) -> SourceObject | None:
        """The object an event names (its key decoded first, then raw), or None when it is gone.

        Raises:
            SourceUnreadableError: every spelling of the key answered 403.
            ClientError: any other AWS failure (the event is retried).
        """
        denied = []
        for key in ref.key_candidates():
            params: dict[str, Any] = {"Bucket": ref.bucket, "Key": key}
            if ref.version_id:
                params["VersionId"] = ref.version_id
            try:
                return SourceObject.from_head(key, self._s3.head_object(**params))
            except ClientError as exc:
                kind = classify(exc)
                if kind == AwsErrorKind.ACCESS_DENIED:
                    denied.append(key)  # perhaps a missing key without s3:ListBucket: try the other spelling
                    continue
                if kind not in (AwsErrorKind.NOT_FOUND, AwsErrorKind.INVALID):
                    raise
        if denied:
            raise SourceUnreadableError(
                f"access denied (403) on HEAD s3://{ref.bucket}/{denied[0]}: the function may not read it, "
                "or it is gone and the function lacks s3:ListBucket (which turns a 404 into a 403)"
            )
        return None

    def current_version(self, bucket: str, key: str) -> ObjectVersion | None:
        """The key's current version, or None when it is gone (or, by a 403, may be)."""
        try:
            head = self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if classify(exc) in (AwsErrorKind.NOT_FOUND, AwsErrorKind.ACCESS_DENIED):
                return None
            raise
        return ObjectVersion.from_response(head)
