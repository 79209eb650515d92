"""Shared fixtures: moto for AWS, the VLM Run emulator for VLM Run (in-process, real HTTP layer)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto import mock_aws

from vlmwatch.core.settings import Settings
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud import botocore_models, moto_speedups
from vlmwatch_local.cloud.loops import LocalAws
from vlmwatch_local.cloud.provision import StackResources, provision
from vlmwatch_local.cloud.stack import fetch_from_moto
from vlmwatch_local.emulator import Emulator, EmulatorConfig

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "us-east-1"

# moto without its two hot spots (a quadratic SQS receive, a slow serializer for items): same responses,
# several times faster (tests/integration/test_moto_speedups.py checks they are the same).
moto_speedups.install()
# One botocore loader for every session of the run: each test's sessions would parse the same service
# models again (see the module).
botocore_models.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the long tests first, one on each worker, each beside a short one.

    The long ones (the chaos smokes: a minute of real time each, mostly waiting on the stack's compressed
    deadlines) collected side by side would all go to one worker, which then ran alone for two minutes
    after the others were done. With ``--maxschedchunk 1`` (``make test``) xdist gives each worker two
    tests to start with, in collection order, then one at a time: so the first two per worker are a long
    one and a short one, and the rest of the long ones come next, longest first.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long")
        return float(marker.kwargs.get("seconds", 30)) if marker else 0.0

    long = sorted((i for i in items if seconds(i)), key=seconds, reverse=True)
    short = [i for i in items if not seconds(i)]
    head: list[pytest.Item] = []
    for _ in range(workers):
        head += [x for x in (long.pop(0) if long else None, short.pop(0) if short else None) if x]
    items[:] = head + long + short


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real credentials, no real endpoints, a fresh runtime for every test."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # moto does not route botocore's account-id endpoints for DynamoDB Streams (see PITFALLS).
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    wiring.reset()
    yield
    wiring.reset()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def stack(aws: None) -> StackResources:
    return provision(region=REGION)


@pytest.fixture
def emulator(clock) -> Emulator:
    # The same clock as the job store: "when was this execution created" must agree on both sides.
    return Emulator(EmulatorConfig(), fetch=fetch_from_moto, clock=clock)


def make_settings(stack: StackResources, **overrides: Any) -> Settings:
    env = stack.environment()
    env.update({k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture
def clock():
    from helpers import Clock

    return Clock(1_800_000_000)


@pytest.fixture
def wire(stack: StackResources, emulator: Emulator, clock):
    """Point the runtime at the stack and the emulator; call again with env overrides to reconfigure."""

    def _wire(transport: httpx.BaseTransport | None = None, **env: Any) -> Settings:
        env.setdefault("DEFAULT_AGENT_NAME", "doc-extractor:v1")
        settings = make_settings(stack, **env)
        wiring.use(
            settings=settings,
            transport=transport or httpx.WSGITransport(app=emulator.app),
            api_key=emulator.config.api_key,
            clock=clock,
        )
        return settings

    return _wire


@pytest.fixture
def local(stack: StackResources, wire, clock) -> LocalAws:
    wire()
    local = LocalAws(stack)
    local.clock = clock  # type: ignore[attr-defined]
    return local
