"""Shared fixtures: moto for AWS, the VLM Run emulator for VLM Run (in-process, real HTTP layer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto import mock_aws

from vlmwatch.core.settings import Settings
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud import moto_speedups
from vlmwatch_local.cloud.loops import LocalAws
from vlmwatch_local.cloud.provision import StackResources, provision
from vlmwatch_local.cloud.stack import fetch_from_moto
from vlmwatch_local.emulator import Emulator, EmulatorConfig

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "us-east-1"

# moto without its two hot spots (a quadratic SQS receive, a slow serializer for items): same responses,
# several times faster (tests/integration/test_moto_speedups.py checks they are the same).
moto_speedups.install()


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
