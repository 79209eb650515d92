"""Ingest: turn one created object into one job row, then hand it to the submit protocol.

The row is written (conditionally, one per object version) before anything is sent to VLM Run, and
it is in the sweeper's index from the start: whatever happens to this process afterwards, the job
is found again. VLM Run trouble never fails the SQS message (the row waits instead); only AWS
trouble does, and then the message is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.s3source import SourceObject, SourceReader
from vlmwatch.core.config import ConfigVersion, from_parameters
from vlmwatch.core.errors import SourceUnreadableError
from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.job import Job
from vlmwatch.core.layout import LONG_FOLDER, MARKER
from vlmwatch.core.lifecycle import Status
from vlmwatch.core.results_index import INDEX_FOLDER
from vlmwatch.core.routing import Route, Skip
from vlmwatch.core.s3events import S3ObjectRef
from vlmwatch.core.settings import Settings
from vlmwatch.flows.submit import Outcome, Submitter

logger = logging.getLogger(__name__)


class Ingestor:
    """Creates jobs and starts executions.

    Args:
        settings: the deployment's settings.
        store: the job table.
        source: HEADs of the input bucket.
        submitter: the submit-exactly-once protocol.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        source: SourceReader,
        submitter: Submitter,
        config: Callable[[], ConfigVersion] | None = None,
        config_at: Callable[[int], ConfigVersion] | None = None,
        written: Callable[[str, ObjectVersion, int], bool] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._source = source
        self._submitter = submitter
        parameters = from_parameters(settings.routing_rules, settings.default_route())
        # The configuration in effect (a pushed version, read through its cache), or the template's parameters.
        self._config = config or (lambda: parameters)
        # A named version (`vlmwatch reprocess --config-version N`); 0 is always the parameters.
        self._config_at = config_at or (lambda number: parameters)
        # Whether a run of an object version has outputs in the output bucket (one listing of one key).
        self._written = written or (lambda key, version, run: False)

    def accept(self, ref: S3ObjectRef) -> Outcome:
        """Record a job for ``ref`` and start its execution, exactly once per object version.

        Raises:
            ClientError, SourceUnreadableError: AWS failed us; nothing was recorded, retry the event.
        """
        expected = self._settings.input_bucket
        if expected and ref.bucket != expected:
            # The queue should only carry the input bucket's events; anything else (a mis-wired rule, a
            # forged message) must not make us read, or write jobs for, another bucket. Retrying cannot help.
            logger.error(
                "event for a bucket this deployment does not watch: refused",
                extra={"event_bucket": ref.bucket, "input_bucket": expected, "key": ref.key},
            )
            return Outcome.FOREIGN
        if not any(self._settings.accepts_key(key) for key in ref.key_candidates()):
            # The EventBridge rule filters on InputPrefix/InputSuffix; a backfill or a DLQ redrive does not.
            logger.warning(
                "key outside InputPrefix/InputSuffix: ignored",
                extra={"key": ref.key, "input_prefix": self._settings.input_prefix},
            )
            return Outcome.IGNORED
        source, changed = self._locate(ref)
        now = self._store.now()
        if source is None:
            key = ref.key_candidates()[0]
            gone = ObjectVersion.of(ref.version_id, ref.etag)
            reason = (
                f"the object changed since the event (its ETag is now {changed.version.etag}, the event's was "
                f"{gone.etag}): the newer upload is processed on its own event"
                if changed is not None
                else "the object no longer exists (deleted before it was processed)"
            )
            job = Job(
                job_id=job_id_for(ref.bucket, key, gone, ref.run),
                run=ref.run,
                bucket=ref.bucket,
                key=key,
                version_id=gone.version_id,
                etag=gone.etag,
                size=ref.size,
                status=Status.SKIPPED,
                skip_reason=reason,
                created_at=now,
                updated_at=now,
            )
            self._store.create(job)
            logger.warning("object missing or changed, job skipped", extra={"job_id": job.job_id, "key": key})
            return Outcome.SKIPPED

        version = ObjectVersion.of(ref.version_id or source.version.version_id, ref.etag or source.version.etag)
        job_id = job_id_for(ref.bucket, source.key, version, ref.run)
        decision: Route | Skip
        if nested := next((f for f in (MARKER, LONG_FOLDER, INDEX_FOLDER) if f in source.key), None):
            # Output folders are "<key>.vlmwatch/" (".vlmwatch-long/" for long keys, ".vlmwatch-index/" for the
            # results index): this key's outputs would nest inside another file's folder or the index.
            decision = Skip(
                rule=None, reason=f"the key contains {nested!r}: it would nest inside vlmwatch's own output folders"
            )
        elif not self._settings.accepts_key(source.key):
            decision = Skip(rule=None, reason="the key is outside InputPrefix/InputSuffix")
        elif source.key.endswith("/") and not source.size:
            decision = Skip(rule=None, reason="a folder marker (a zero-byte object whose key ends in '/'), not a file")
        elif source.size == 0:
            decision = Skip(rule=None, reason="an empty object (0 bytes): nothing to extract")
        else:
            config = self._config() if ref.config_version is None else self._config_at(ref.config_version)
            resolved = config.config.rules.resolve(
                source.key,
                source.content_type,
                source.metadata,
                default=config.config.default_route(),
                allowed_agents=self._settings.allowed_agents,
            )
            if isinstance(resolved, Route):
                # Record the model and tier that actually run, and the configuration version that chose them,
                # so the result document says so; a backfill may ask for a tier for the files it re-sends
                # (`vlmwatch backfill --service-tier flex`).
                tier = ref.service_tier or resolved.service_tier or self._settings.service_tier
                resolved = resolved.model_copy(
                    update={
                        "model": resolved.model or self._settings.model,
                        "service_tier": tier,
                        "config_version": config.number,
                    }
                )
            decision = resolved
        job = Job(
            job_id=job_id,
            bucket=ref.bucket,
            key=source.key,
            version_id=version.version_id,
            etag=version.etag,
            run=ref.run,
            size=source.size,
            content_type=source.content_type,
            route=decision if isinstance(decision, Route) else None,
            status=Status.SKIPPED if isinstance(decision, Skip) else Status.RECEIVED,
            skip_reason=decision.reason if isinstance(decision, Skip) else None,
            created_at=now,
            updated_at=now,
        )
        expired = isinstance(decision, Route) and self._row_may_have_expired(source)
        if expired and self._written(source.key, version, ref.run):
            # Its row expired (ResultTtlDays) but its outputs never do: a redriven or replayed event must not run
            # it again over its documents (`vlmwatch reprocess` starts a new run beside them).
            logger.warning(
                "run already written and its row expired: event ignored",
                extra={"job_id": job_id, "key": source.key, "run": ref.run},
            )
            return Outcome.DUPLICATE
        created = self._store.create(job, due_at=now + self._settings.submit_lease_seconds)
        if not created:
            existing = created.current  # the row that was there, as the lost put returned it
            if (
                existing is not None
                and existing.status == Status.RECEIVED
                and existing.submit_started_at is None
                and (existing.next_poll_at or 0) <= now
            ):
                return self._submitter.submit(existing)  # a deferred submit that is due: try it now
            asked = decision.config_version if isinstance(decision, Route) else None
            ran = existing.route.config_version if existing is not None and existing.route else None
            if ref.run > 1 and asked is not None and ran is not None and asked != ran:
                # Two reprocesses planned the same run with different configurations: the first one wins.
                logger.error(
                    "reprocess run already started with another configuration: this request is dropped",
                    extra={"job_id": job_id, "run": ref.run, "asked_config": asked, "running_config": ran},
                )
            logger.info(
                "duplicate event ignored", extra={"job_id": job_id, "status": getattr(existing, "status", None)}
            )
            return Outcome.DUPLICATE
        if isinstance(decision, Skip):
            logger.info("object skipped", extra={"job_id": job_id, "reason": decision.reason})
            return Outcome.SKIPPED
        return self._submitter.submit(job)

    def _row_may_have_expired(self, source: SourceObject) -> bool:
        """A version's rows are written after the version itself and kept ``ResultTtlDays`` at least, so only a
        version older than that can have lost a row: only then are its outputs looked for (fresh uploads, all
        but a replay's or a late redrive's, cost no listing). Its age is S3's own (``Date`` minus
        ``LastModified``, with an hour's margin); S3 always sends ``Date``, moto in-process does not."""
        ttl = self._settings.result_ttl_days * 86400 - 3600
        return source.age_seconds is not None and source.age_seconds >= ttl

    def _locate(self, ref: S3ObjectRef) -> tuple[SourceObject | None, SourceObject | None]:
        """(the object version the event names, None), or (None, what the key holds now if it changed).

        Each reading of the key is HEADed on its own; one counts only if the HEAD is the event's version (its
        version id was asked for) or has the event's ETag. A ``+`` key in an unversioned bucket otherwise
        decodes to another existing object (``docs/a b.txt`` for ``docs/a+b.txt``), whose document would
        then be written for the upload that never ran.

        Raises:
            SourceUnreadableError: no reading was found and some answered 403.
        """
        denied: SourceUnreadableError | None = None
        changed: SourceObject | None = None
        expected = ObjectVersion.of(None, ref.etag).etag
        for key in ref.key_candidates():
            try:
                found = self._source.head(ref.spelled(key))
            except SourceUnreadableError as exc:
                denied = denied or exc
                continue
            if found is None:
                continue
            if ref.version_id or expected is None or found.version.etag in (None, expected):
                return found, None
            changed = changed or found
        if changed is None and denied is not None:
            raise denied
        return None, changed
