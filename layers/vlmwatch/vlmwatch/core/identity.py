"""Which object version a job is about, and the names derived from it. Defined once, here.

S3 quotes ETags (``"\"abc\""``) and events spell them their own ways; ``VersionId: "null"`` (an
object written while versioning was off) is kept as the version it is. Everything that names a version (the job id, the
output folder, the CLI's lookups) goes through :class:`ObjectVersion`, so they always agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_+=-]{1,128}$")


def job_id_for(bucket: str, key: str, version: ObjectVersion, run: int = 1) -> str:
    """Stable id for one run of one object version; also a valid Step Functions execution name (<= 80 chars).

    Run 1 (the upload's) keeps the id it always had, so nothing written before runs existed moves; a
    reprocess run N is another id, derived the same way, so duplicate requests for run N meet one row.
    """
    seed = f"{bucket}\n{key}\n{version.job_part}" + (f"\nrun {run}" if run > 1 else "")
    return hashlib.sha256(seed.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an S3 object: its version id, or its ETag in an unversioned bucket."""

    version_id: str | None
    etag: str | None

    @classmethod
    def of(cls, version_id: str | None, etag: str | None) -> ObjectVersion:
        """Normalised: ETag quotes are dropped; an empty version id is none. S3's ``"null"`` version id
        (an object written while versioning was off or suspended) is a real one: S3 reads that exact
        version with ``VersionId=null``, and job ids have always hashed it."""
        return cls(
            version_id=version_id or None,
            etag=(etag or "").strip('"') or None,
        )

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> ObjectVersion:
        """From a HeadObject / PutObject / ListObjectVersions entry (``VersionId``, ``ETag``)."""
        return cls.of(response.get("VersionId"), response.get("ETag"))

    @property
    def job_part(self) -> str:
        """What the job id hashes: the version id, else ``etag:<etag>``."""
        return self.version_id or f"etag:{self.etag}"

    @property
    def path_token(self) -> str:
        """A path segment for this version: the version id if it is plain, else a digest of it."""
        raw = self.version_id or f"etag-{self.etag or 'none'}"
        return raw if _PLAIN_TOKEN.match(raw) else "h-" + hashlib.sha256(raw.encode()).hexdigest()[:32]
