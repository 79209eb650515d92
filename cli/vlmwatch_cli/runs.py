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
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from vlmwatch.adapters.config_store import ConfigStore
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import SETTLED, Status
from vlmwatch.core.routing import ServiceTier
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
    plan = ReprocessPlan(config_version=config_version, service_tier=service_tier)
    for key in keys:
        runs = newest_version_runs(runs_of(target, key))
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

    if not target.output_bucket:
        return 0
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
        runs = newest_version_runs(runs_of(target, key))
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
