"""One way to name a job, for every command that takes one.

A reference is, tried in this order (cheapest first, each a read by key or one index query):

1. a full job id (40 hex digits);
2. an ``s3://bucket/key`` URI, as ``submit`` prints it, or a bare input key; either may end in
   ``?versionId=V`` for one version (else: the key's newest job);
3. an execution id (VLM Run's);
4. a unique prefix of a job id, at least 4 hex digits (as ``list`` shows them, as git takes short hashes).
   A prefix that matches several jobs is an error that lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vlmwatch.adapters.job_queries import JobQueries
from vlmwatch.core.job import Job
from vlmwatch_cli.errors import UsageError

JOB_ID_LENGTH = 40
MIN_PREFIX = 4
SHORT_ID = 12  # what `list` shows
_HEX = re.compile(r"^[0-9a-f]+$")
VERSION_MARK = "?versionId="


class AmbiguousRefError(UsageError):
    """A short id matches several jobs; the message lists them."""

    def __init__(self, ref: str, candidates: list[Job]) -> None:
        listed = "; ".join(f"{j.job_id[:SHORT_ID]} {j.key} ({(j.outcome or j.status).value})" for j in candidates)
        super().__init__(f"{ref!r} matches {len(candidates)} jobs: {listed}. Give more of the id.")
        self.candidates = candidates


@dataclass(frozen=True)
class ObjectRef:
    bucket: str | None
    key: str
    version: str | None


def parse_object(ref: str, default_bucket: str | None) -> ObjectRef:
    """``s3://bucket/key[?versionId=V]`` or ``key[?versionId=V]``."""
    bucket = default_bucket or None
    rest = ref
    if ref.startswith("s3://"):
        bucket, _, rest = ref[5:].partition("/")
    key, mark, version = rest.rpartition(VERSION_MARK) if VERSION_MARK in rest else (rest, "", "")
    return ObjectRef(bucket or None, key, version if mark else None)


class Resolver:
    """Finds the job a reference names, with :class:`JobQueries` (never a table scan)."""

    def __init__(self, queries: JobQueries, input_bucket: str | None) -> None:
        self._q = queries
        self._bucket = input_bucket or None

    def find(self, ref: str) -> Job | None:
        """The job ``ref`` names, or None.

        Raises:
            AmbiguousRefError: ``ref`` is a prefix of several job ids.
        """
        ref = ref.strip()
        if not ref:
            return None
        if len(ref) == JOB_ID_LENGTH and _HEX.match(ref):
            job = self._q.get(ref)
            if job is not None:
                return job
        job = self._by_object(ref)
        if job is not None:
            return job
        if ref.startswith("s3://"):
            return None
        execution_job = self._q.job_id_for_execution(ref)
        if execution_job is not None:
            return self._q.get(execution_job)
        if MIN_PREFIX <= len(ref) < JOB_ID_LENGTH and _HEX.match(ref):
            ids = self._q.job_ids_with_prefix(ref, limit=10)
            if len(ids) == 1:
                return self._q.get(ids[0])
            if len(ids) > 1:
                raise AmbiguousRefError(ref, self._q.rows(ids))
        return None

    def _by_object(self, ref: str) -> Job | None:
        candidates = [parse_object(ref, self._bucket)]
        if VERSION_MARK in ref:  # a key may itself contain "?versionId=": try it whole too
            whole = ref[5:].partition("/")[2] if ref.startswith("s3://") else ref
            candidates.append(ObjectRef(candidates[0].bucket, whole, None))
        for obj in candidates:
            job = self._for_object(obj)
            if job is not None:
                return job
        return None

    def _for_object(self, obj: ObjectRef) -> Job | None:
        if not obj.key:
            return None
        # The newest first: without a version, the newest job of the key (almost always its current version).
        limit = 1 if obj.version is None and obj.bucket in (None, self._bucket) else None
        entries = self._q.for_key(obj.key, limit=limit)
        if not entries:
            return None
        for job in self._q.rows([e.job_id for e in entries]):
            if obj.bucket is not None and job.bucket != obj.bucket:
                continue
            if obj.version is None or obj.version in (job.version_id, job.etag, job.version.path_token):
                return job
        return None
