"""What the ``vlmwatch`` commands do, without the terminal: each function is testable against moto.

Nothing here talks to VLM Run. Work is handed to the deployment the way AWS would hand it: objects are
uploaded to the input bucket, backfilled objects become "Object Created" messages on the ingest queue,
retried jobs go back on their row for the sweeper. The pipeline's own guarantees (one job per object
version, one submit at a time) make every command safe to run twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

from vlmwatch.adapters.jobstore import UNBOUNDED
from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.job import Job
from vlmwatch.core.layout import OutputLayout
from vlmwatch.core.lifecycle import RETRYABLE, SETTLED, Status
from vlmwatch.core.routing import ServiceTier
from vlmwatch_cli.errors import UsageError
from vlmwatch_cli.jobs import list_jobs
from vlmwatch_cli.target import Target

UNDELIVERED_LIMIT = 100_000


def wait(
    target: Target,
    job_ids: list[str],
    *,
    timeout: float,
    interval: float = 1.0,
    on_change: Callable[[Job], None] | None = None,
) -> dict[str, Job | None]:
    """Follow jobs until each is delivered or skipped (or ``timeout``); returns the last seen rows."""
    last: dict[str, Job | None] = dict.fromkeys(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        for job_id in job_ids:
            job = target.store.get(job_id)
            before = last[job_id]
            changed = job is not None and (before is None or before.status != job.status)
            if changed and on_change is not None and job is not None:
                on_change(job)
            last[job_id] = job
        if all(j is not None and j.status in SETTLED for j in last.values()) or time.monotonic() >= deadline:
            return last
        time.sleep(interval)


@dataclass
class BackfillReport:
    listed: int = 0
    enqueued: int = 0
    known: int = 0  # a job row, or (``documented``) only the outputs of one whose row expired
    documented: int = 0
    ignored: int = 0
    keys: list[str] = field(default_factory=list)


def backfill(
    target: Target,
    uri: str,
    *,
    dry_run: bool = False,
    rate: float = 0.0,
    service_tier: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillReport:
    """Enqueue existing objects under ``s3://bucket/prefix`` as "Object Created" events.

    Objects whose job already exists are left alone, and the ingest writes one job per object version
    whatever arrives twice: running it again never creates a second job or execution. So are versions
    with anything in their output folder: their row expired (ResultTtlDays) but their documents stay, and
    a new run 1 would write over them (`vlmwatch reprocess` starts a new run beside them instead). ``rate`` caps the
    messages per second (0 = as fast as SQS takes them). ``service_tier`` runs them on that VLM Run tier
    (``flex``: half the credits, more latency), whatever their rule says.
    """
    if service_tier is not None and service_tier not in get_args(ServiceTier):
        raise UsageError(f"unknown service tier {service_tier!r}: one of {', '.join(get_args(ServiceTier))}")
    bucket, prefix = input_prefix(target, uri)
    target.need("output_bucket")  # where a version whose row expired shows it was processed
    report = BackfillReport()
    batch: list[dict[str, Any]] = []
    for obj in _current_objects(target, bucket, prefix):
        report.listed += 1
        key, version = obj["Key"], ObjectVersion.from_response(obj)
        if key.endswith("/") and not obj.get("Size"):
            report.ignored += 1
            continue
        if target.store.get(job_id_for(bucket, key, version)) is not None:
            report.known += 1
            continue
        if _has_outputs(target, key, version):
            report.known += 1
            report.documented += 1
            continue
        report.keys.append(key)
        if dry_run:
            continue
        batch.append(
            {
                "Id": str(len(batch)),
                "MessageBody": json.dumps(
                    object_created(bucket, key, obj.get("Size"), version, service_tier=service_tier)
                ),
            }
        )
        if len(batch) == 10:
            report.enqueued += _send(target, batch)
            batch = []
            if rate > 0:
                sleep(10 / rate)
    if batch:
        report.enqueued += _send(target, batch)
    return report


def object_created(
    bucket: str,
    key: str,
    size: int | None,
    version: ObjectVersion,
    *,
    service_tier: str | None = None,
    run: int = 1,
    config_version: int | None = None,
) -> dict[str, Any]:
    """An "Object Created" event as S3 → EventBridge → SQS delivers it (the shape in events/); vlmwatch's
    own extension asks the ingest to run the file on ``service_tier``, as run ``run`` of its version, with
    configuration ``config_version`` (``vlmwatch reprocess``)."""
    obj: dict[str, Any] = {"key": key, "size": size, "etag": version.etag or ""}
    if version.version_id:
        obj["version-id"] = version.version_id
    asked = {"service_tier": service_tier, "run": run if run > 1 else None, "config_version": config_version}
    asked = {k: v for k, v in asked.items() if v is not None}
    extension = {"vlmwatch": asked} if asked else {}
    return {
        **extension,
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj, "reason": "vlmwatch backfill"},
    }


@dataclass
class ServiceReport:
    """``vlmwatch service``: the account's circuit breaker, and the work waiting behind it."""

    state: str  # closed | open | half-open | ramping
    reason: str | None
    message: str | None
    since: int | None
    next_probe_at: int | None
    probes: int  # in all
    opened: int
    downtime_seconds: int
    waiting: dict[str, int]
    episode_probes: int = 0  # since it last opened
    ramp_until: int | None = None  # while ramping: when every caller is let through again


def deployment_ramp_seconds() -> int:
    """The deployment's breaker ramp (BREAKER_RAMP_SECONDS, as the functions read it; the settings' default
    when this shell does not set it)."""
    from vlmwatch.core.settings import Settings

    value = os.environ.get("BREAKER_RAMP_SECONDS")
    default = Settings.model_fields["breaker_ramp_seconds"].default
    return int(value) if value and value.isdigit() else int(default)


def _breaker(target: Target) -> Any:
    """The breaker as an operator sees it: fresh reads, and the deployment's ramp when a resume closes it."""
    from vlmwatch.adapters.breaker import CircuitBreaker

    client = target.need("table").client("dynamodb")
    return CircuitBreaker(client, target.table, refresh_seconds=0, ramp_seconds=deployment_ramp_seconds())


def service(target: Target, *, now: int | None = None) -> ServiceReport:
    """The breaker's row and a count of the jobs waiting in the in-flight index, by status.

    Half-open: a probe went out since it last opened (and the next is not due yet); ramping: closed less
    than a ramp ago (the ramp its closer applied, recorded on the row)."""
    state = _breaker(target).state(fresh=True)
    now = int(time.time()) if now is None else now
    ramp_until = None
    if state.ramp_from is not None:
        ramp = state.ramp_seconds if state.ramp_seconds is not None else deployment_ramp_seconds()
        ramp_until = state.ramp_from + ramp
    if state.open:
        label = "half-open" if state.next_probe_at > now and state.episode_probes else "open"
    elif ramp_until is not None and now < ramp_until:
        label = "ramping"
    else:
        label = "closed"
    waiting: dict[str, int] = {}
    for job in target.store.due(UNBOUNDED, limit=UNDELIVERED_LIMIT):
        waiting[job.status.value] = waiting.get(job.status.value, 0) + 1
    return ServiceReport(
        state=label,
        reason=state.reason.value if state.open and state.reason else None,
        message=state.message if state.open else None,
        since=state.since if state.open else None,
        next_probe_at=state.next_probe_at if state.open else None,
        probes=state.probes,
        opened=state.opened,
        downtime_seconds=state.downtime_until(now),
        waiting=waiting,
        episode_probes=state.episode_probes if state.open else 0,
        ramp_until=ramp_until if label == "ramping" else None,
    )


@dataclass
class UsageRow:
    """What one rule, agent or prefix cost over a period (``vlmwatch usage``)."""

    group: str
    files: int = 0
    credits: float = 0.0
    elements: int = 0
    failures: int = 0


USAGE_GROUPS = ("rule", "agent", "prefix")


def usage(target: Target, *, since: int | None, by: str) -> list[UsageRow]:
    """Credits, elements, files and failures per ``by`` (rule, agent or the key's first folder), most
    credits first; from the job rows (each carries its execution's usage as numbers)."""
    if by not in USAGE_GROUPS:
        raise UsageError(f"--by must be one of {', '.join(USAGE_GROUPS)}, not {by!r}")
    rows: dict[str, UsageRow] = {}
    for job in list_jobs(target.queries, since=since):
        if job.status == Status.SKIPPED:
            continue
        route = job.route
        if by == "rule":
            group = route.rule if route else "-"
        elif by == "agent":
            group = (route.agent or "(inline prompt)") if route else "-"
        else:
            group = job.key.split("/", 1)[0] + "/" if "/" in job.key else "(top level)"
        row = rows.setdefault(group, UsageRow(group))
        row.files += 1
        row.credits += job.credits_used or 0.0
        row.elements += job.elements_processed or 0
        row.failures += (job.outcome or job.status) in RETRYABLE
    return sorted(rows.values(), key=lambda r: (-r.credits, r.group))


def pause(target: Target, message: str) -> ServiceReport:
    """Stop intake by hand (no request reaches VLM Run, no probes) until :func:`resume`."""
    _breaker(target).pause(message)
    return service(target)


def resume(target: Target) -> ServiceReport:
    """Close the breaker whatever opened it; intake comes back at the ramp."""
    _breaker(target).resume()
    return service(target)


# -- helpers ----------------------------------------------------------------------------------------


def send_messages(target: Target, bodies: list[dict[str, Any]]) -> int:
    """Send message bodies to the ingest queue, ten at a time."""
    sent = 0
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        sent += _send(target, [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(chunk)])
    return sent


def _send(target: Target, entries: list[dict[str, Any]]) -> int:
    target.need("ingest_queue_url")
    result = target.client("sqs").send_message_batch(QueueUrl=target.ingest_queue_url, Entries=entries)
    if result.get("Failed"):
        raise UsageError(f"SQS refused {len(result['Failed'])} backfill messages: {result['Failed'][:2]}")
    return len(entries)


def _has_outputs(target: Target, key: str, version: ObjectVersion) -> bool:
    """Whether anything of ``version`` (a document, an artifact, a run's folder) is in the output bucket: the
    ingest's own check (run 1's folder is the version's)."""
    from vlmwatch.adapters.outputs import run_written

    layout = OutputLayout(target.output_bucket, target.output_prefix)
    return run_written(target.client("s3"), layout, key, version, 1)


def _current_objects(target: Target, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    s3 = target.client("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            if version.get("IsLatest"):
                yield version


def input_prefix(target: Target, uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` in the watched input bucket, as (bucket, prefix).

    Raises:
        UsageError: not an ``s3://`` URI, or another bucket.
    """
    if not uri.startswith("s3://"):
        raise UsageError(f"expected s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if bucket != target.need("input_bucket").input_bucket:
        raise UsageError(f"{uri} is not in the watched input bucket s3://{target.input_bucket}/")
    return bucket, prefix


__all__ = ["backfill", "input_prefix", "object_created", "pause", "resume", "send_messages", "service", "usage", "wait"]
