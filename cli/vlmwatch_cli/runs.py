"""Runs: `vlmwatch reprocess` starts a new run of files already processed, `vlmwatch compare` sets two runs
side by side.

A run is one job of one object version: run 1 starts on upload, run N+1 when reprocessed. Reprocess does
not write rows itself: it sends the ingest queue an "Object Created" message for the exact version with
vlmwatch's extension (``run``, ``config_version``, ``service_tier``), so the ingest decides the route with
that configuration, writes the run's row conditionally (one row per run, however often the message
arrives) and submits it through the usual protocol, under the request budget and the breaker. The run
number and the configuration version are decided here, before anything is sent, so running the same
reprocess twice asks for the same runs: nothing starts twice. A file whose newest run already ran with that
configuration (and tier), or is still in flight, is left alone with the reason.

Rows expire after ``ResultTtlDays``; documents stay. A run whose row is gone is read back from its document
(:func:`documented_runs`), so reprocess numbers the next run above every run written, `get` and `compare`
still find it, and nothing is ever written over an earlier run's document.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError

from vlmwatch.adapters.config_store import ConfigStore
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.job import Job
from vlmwatch.core.layout import OutputLayout
from vlmwatch.core.lifecycle import SETTLED, Status
from vlmwatch.core.routing import Route, ServiceTier
from vlmwatch_cli.errors import UsageError
from vlmwatch_cli.ops import input_prefix, object_created, send_messages

if TYPE_CHECKING:
    from vlmwatch_cli.target import Target


@dataclass(frozen=True)
class Planned:
    """One new run to start: the run it follows, and its number."""

    last: Job
    run: int


@dataclass
class ReprocessPlan:
    config_version: int
    service_tier: str | None
    runs: list[Planned] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)  # (key, why it is not reprocessed)

    @property
    def credits(self) -> float:
        """What the runs being repeated cost last time (their newest run's credits)."""
        return sum(p.last.credits_used or 0 for p in self.runs)


def runs_of(target: Target, key: str) -> list[Job]:
    """Every job (every version, every run) of one input key, newest created first."""
    entries = target.queries.for_key(key)
    return target.queries.rows(e.job_id for e in entries)


def known_runs(target: Target, key: str) -> list[Job]:
    """Every run of one input key: its rows, and for runs whose row expired, their documents.

    The documents are read only when the rows cannot tell the whole story: no row at all, or a version
    whose runs are not 1, 2, ... without a gap (rows expire a TTL after they settle, oldest run first)."""
    rows = runs_of(target, key)
    numbers: dict[ObjectVersion, set[int]] = defaultdict(set)
    for job in rows:
        numbers[job.version].add(job.run)
    if rows and all(runs == set(range(1, max(runs) + 1)) for runs in numbers.values()):
        return rows
    known = {j.job_id for j in rows}
    return rows + [j for j in documented_runs(target, key) if j.job_id not in known]


def documented_runs(target: Target, key: str) -> list[Job]:
    """Every run of ``key`` with a document in its output folder (every version), as the row it had."""
    if not target.output_bucket:
        return []
    layout = OutputLayout(target.output_bucket, target.output_prefix)
    s3 = target.client("s3")
    folder = layout.versions_folder(key)
    found: dict[str, Job] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.output_bucket, Prefix=folder):
        for obj in page.get("Contents", []):
            if layout.document_run(key, obj["Key"]) is None:  # an artifact, not a run's document
                continue
            body = s3.get_object(Bucket=target.output_bucket, Key=obj["Key"])["Body"].read()
            job = job_of_document(json.loads(body), layout.uri(obj["Key"]))
            if job is None or job.key != key:
                continue
            # One outcome per run; a result left beside an earlier attempt's error is the run's outcome.
            if job.job_id not in found or job.result_uri:
                found[job.job_id] = job
    return list(found.values())


def _epoch(iso: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(iso).timestamp()) if isinstance(iso, str) else None
    except ValueError:
        return None


def job_of_document(document: dict[str, Any], uri: str) -> Job | None:
    """The row a result or error document was written from, as far as the document tells it (a delivered
    run: its outcome, route, credits and times); None for anything that is not one of vlmwatch's documents."""
    source, ran = document.get("source") or {}, document.get("ran") or {}
    timings, execution = document.get("timings") or {}, document.get("execution") or {}
    completed = str(document.get("schema", "")).startswith("vlmwatch.result")
    route: Route | None = None
    if ran.get("rule"):
        try:
            route = Route.model_validate({k: v for k, v in ran.items() if k in Route.model_fields})
        except ValidationError:
            route = None
    try:
        outcome = Status.COMPLETED if completed else Status(document.get("status") or "failed")
    except ValueError:
        outcome = Status.FAILED
    received = _epoch(timings.get("received_at"))
    delivered = _epoch(timings.get("delivered_at"))
    usage = execution.get("usage") if isinstance(execution.get("usage"), dict) else None
    try:
        return Job(
            job_id=document["job_id"],
            bucket=source["bucket"],
            key=source["key"],
            version_id=source.get("version_id"),
            etag=source.get("etag"),
            run=int(document.get("run") or 1),
            size=source.get("size"),
            content_type=source.get("content_type"),
            route=route,
            status=Status.DELIVERED,
            outcome=outcome,
            execution_id=execution.get("id"),
            error=None if completed else (document.get("error") or {}).get("message"),
            result_uri=uri if completed else None,
            error_uri=None if completed else uri,
            usage=usage,
            credits_used=(usage or {}).get("credits_used"),
            created_at=received or delivered or 0,
            updated_at=delivered or received or 0,
            finished_at=_epoch(timings.get("finished_at")),
            delivered_at=delivered,
        )
    except (KeyError, TypeError, ValidationError):
        return None


def newest_version_runs(jobs: list[Job]) -> list[Job]:
    """The runs of the newest version processed, by run number. Versions are ordered by their first run
    (the upload's): a reprocess of an older version is newer as a job, not as a version."""
    if not jobs:
        return []
    firsts = [j for j in jobs if j.run == 1] or jobs
    newest = max(firsts, key=lambda j: j.created_at)
    return sorted((j for j in jobs if j.version == newest.version), key=lambda j: j.run)


def _keys_under(target: Target, uri: str) -> Iterator[str]:
    bucket, prefix = input_prefix(target, uri)
    for page in target.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"]


def select_keys(
    target: Target, refs: Iterable[str], *, statuses: set[Status], rule: str | None, since: int | None, limit: int
) -> list[str]:
    """The input keys a reprocess is about: named keys, every key under an ``s3://`` prefix, or the keys of
    recent jobs matching the filters."""
    from vlmwatch_cli import jobs

    keys: list[str] = []
    for ref in refs:
        if ref.startswith("s3://"):
            keys.extend(_keys_under(target, ref))
        else:
            keys.append(ref)
    if not refs:
        if not (statuses or rule or since):
            raise UsageError("name keys or an s3:// prefix, or filter with --status, --rule or --since")
        for job in jobs.list_jobs(target.queries, statuses, since=since, limit=limit):
            if rule is None or (job.route is not None and job.route.rule == rule):
                keys.append(job.key)
    return list(dict.fromkeys(keys))[:limit]


def plan_reprocess(
    target: Target, keys: Iterable[str], *, config_version: int | None, service_tier: str | None
) -> ReprocessPlan:
    """Decide, per key, the run to start (the newest version's next run) or why none is."""
    if service_tier is not None and service_tier not in get_args(ServiceTier):
        raise UsageError(f"unknown service tier {service_tier!r}: one of {', '.join(get_args(ServiceTier))}")
    store = ConfigStore(target.client("dynamodb"), target.table)
    if config_version is None:
        current = store.current()
        config_version = current.number if current else 0
    elif config_version > 0:
        try:
            store.get(config_version)
        except ConfigError as exc:
            raise UsageError(str(exc)) from exc
    # The output folder says which runs exist beyond the rows (they expire): a new run is numbered above them.
    target.need("output_bucket")
    plan = ReprocessPlan(config_version=config_version, service_tier=service_tier)
    for key in keys:
        runs = newest_version_runs(known_runs(target, key))
        if not runs:
            plan.left.append((key, "no job for this key (upload it, or `vlmwatch backfill` it, first)"))
            continue
        last = runs[-1]
        ran_with = last.route.config_version if last.route else None
        tier = last.route.service_tier if last.route else None
        if last.status not in SETTLED:
            plan.left.append((key, f"run {last.run} is still {last.status.value}"))
        elif (
            last.outcome != Status.FAILED
            and ran_with == config_version
            and (service_tier is None or service_tier == tier)
            # v0 is the template's parameters, which a redeploy may have changed: one rerun under it is allowed.
            and (last.run > 1 or config_version > 0)
        ):
            plan.left.append((key, f"its newest run ({last.run}) already ran with v{config_version}"))
        else:
            plan.runs.append(Planned(last=last, run=max(last.run, _runs_written(target, last)) + 1))
    return plan


def _runs_written(target: Target, job: Job) -> int:
    """The highest run with a folder in the output bucket (rows expire after ResultTtlDays; documents stay,
    and a new run must never write into an older run's folder)."""
    from vlmwatch.adapters.outputs import OutputWriter

    writer = OutputWriter(target.client("s3"), target.output_bucket, target.output_prefix)
    return max(writer.runs_written(job.key, job.version), default=0)


def start(target: Target, plan: ReprocessPlan) -> int:
    """Send the planned runs to the ingest queue; returns how many were sent."""
    bodies = [
        object_created(
            p.last.bucket,
            p.last.key,
            p.last.size,
            ObjectVersion.of(p.last.version_id, p.last.etag),
            service_tier=plan.service_tier,
            run=p.run,
            config_version=plan.config_version,
        )
        for p in plan.runs
    ]
    return send_messages(target, bodies)


# -- compare ---------------------------------------------------------------------------------------


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON value as (dot path, value); list items by index."""
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            yield from leaves(inner, f"{path}.{name}" if path else str(name))
    elif isinstance(value, list) and value:
        for i, inner in enumerate(value):
            yield from leaves(inner, f"{path}.{i}" if path else str(i))
    else:
        yield path or "(response)", value


@dataclass
class FieldCount:
    agree: int = 0
    differ: int = 0
    only_a: int = 0
    only_b: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    files: int = 0
    compared: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, FieldCount] = field(default_factory=lambda: defaultdict(FieldCount))


def _pick(runs: list[Job], *, run: int | None, config: int | None) -> Job | None:
    matching = [
        j
        for j in runs
        if (run is None or j.run == run) and (config is None or (j.route and j.route.config_version == config))
    ]
    return matching[-1] if matching else None


def compare(
    target: Target, keys: Iterable[str], side_a: tuple[int | None, int | None], side_b: tuple[int | None, int | None]
) -> Comparison:
    """Compare two runs of each key's newest version, picked by run number or configuration version
    (``(run, config)`` per side), field by field over their responses."""
    s3 = target.client("s3")
    result = Comparison()
    for key in keys:
        result.files += 1
        runs = newest_version_runs(known_runs(target, key))
        a, b = _pick(runs, run=side_a[0], config=side_a[1]), _pick(runs, run=side_b[0], config=side_b[1])
        if a is None or b is None or not a.result_uri or not b.result_uri:
            which = "A" if a is None or not a.result_uri else "B"
            result.missing.append((key, f"no completed run for side {which}"))
            continue
        result.compared += 1
        left, right = (dict(leaves(_response(s3, j.result_uri))) for j in (a, b) if j.result_uri)
        for name in sorted(set(left) | set(right)):
            count = result.fields[name]
            if name not in right:
                count.only_a += 1
            elif name not in left:
                count.only_b += 1
            elif left[name] == right[name]:
                count.agree += 1
            else:
                count.differ += 1
                if len(count.examples) < 3:
                    shown = f"{key}: {json.dumps(left[name])[:40]} -> {json.dumps(right[name])[:40]}"
                    count.examples.append(shown)
    return result


def _response(s3: Any, uri: str) -> Any:
    bucket, _, key = uri[5:].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).get("response")
