"""`vlmwatch config show|push|history|rollback`: the operator's side of configuration versions.

A push is validated in full here, before anything is written (``parse_config``), and written as one
transaction (``ConfigStore.push``); the functions see it within their cache's max age
(``CONFIG_MAX_AGE_SECONDS``, 60 s). ``--dry-run`` writes nothing: it shows which recent files the new
rules would route differently from how they ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vlmwatch.adapters.config_store import ConfigStore
from vlmwatch.core.config import ConfigVersion, PipelineConfig, RoutingChange, describe, parse_config
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.job import Job
from vlmwatch.core.routing import Route, Skip


@dataclass(frozen=True)
class PushPlan:
    """What a push would do: the version it would create and the recent files it would route differently."""

    config: PipelineConfig
    replaces: ConfigVersion | None
    changes: list[RoutingChange]
    checked: int


def read_config_file(path: Path) -> PipelineConfig:
    """Parse and validate a configuration file.

    Raises:
        ConfigError: the file cannot be read or does not validate (every problem named).
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_config(text)


def plan_push(store: ConfigStore, config: PipelineConfig, recent: Iterable[Job]) -> PushPlan:
    """Route ``recent`` jobs' files with ``config`` and list those that would run differently from how they
    did run (the route on their row; a skip when they were skipped).

    Jobs whose route came from the per-file metadata override are left out: the row does not keep the
    object's metadata, and the override, not the rules, chose their route.
    """
    changes: list[RoutingChange] = []
    seen: set[str] = set()
    for job in recent:
        if job.key in seen or (job.route is not None and job.route.rule == "metadata"):
            continue
        seen.add(job.key)
        before: Route | Skip = job.route or Skip(rule=None, reason=job.skip_reason or "skipped")
        after = config.resolve(job.key, job.content_type)
        if before != after:
            changes.append(RoutingChange(key=job.key, before=describe(before), after=describe(after)))
    return PushPlan(config=config, replaces=store.current(), changes=changes, checked=len(seen))


def push(store: ConfigStore, plan: PushPlan, note: str = "") -> ConfigVersion:
    """Store the planned configuration, on the condition that the version it was compared with is still
    the one in effect (``ConfigConflictError`` otherwise)."""
    expect = plan.replaces.number if plan.replaces else 0
    if plan.replaces is not None and plan.replaces.config.digest == plan.config.digest:
        raise ConfigError(f"this configuration is already in effect as {plan.replaces.label}: nothing to push")
    return store.push(plan.config, note=note, expect=expect)
