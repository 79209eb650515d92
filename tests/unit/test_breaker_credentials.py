"""A refused key opens the account's breaker only after the key was re-read, for a 403 as for a 401.

A rotated key is the usual reason for a refusal: the first 401/403 re-reads it (Secrets Manager) and sends
the request again; only a refusal of the fresh key is a fact about the account. A 403 about the plan's
quota is about credits, not the key: no re-read, the breaker opens for credits.
"""

from __future__ import annotations

import boto3
import httpx
import pytest

from vlmwatch.adapters.breaker import CircuitBreaker, Reason
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.core.errors import VlmRunAuthError, VlmRunCreditsError

EXECUTION = {"id": "exec-1", "name": "a:v1", "status": "pending", "created_at": "2026-11-25T12:00:00Z"}


class Account:
    """VLM Run refusing every key but ``valid`` with ``status`` (the detail says why)."""

    def __init__(self, status: int, valid: str | None, detail: str = "Not authenticated") -> None:
        self.status, self.valid, self.detail = status, valid, detail
        self.keys: list[str] = []  # the key each request carried

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        self.keys.append(key)
        if key != self.valid:
            return httpx.Response(self.status, json={"detail": self.detail})
        return httpx.Response(200, json=EXECUTION)


class Secret:
    """The key as Secrets Manager holds it: ``current`` after a re-read, ``cached`` before."""

    def __init__(self, cached: str, current: str) -> None:
        self.cached, self.current = cached, current
        self.reads: list[bool] = []

    def __call__(self, refresh: bool) -> str:
        self.reads.append(refresh)
        if refresh:
            self.cached = self.current
        return self.cached


@pytest.fixture
def breaker(stack) -> CircuitBreaker:
    return CircuitBreaker(boto3.client("dynamodb", region_name=stack.region), stack.table)


def client(account: Account, secret: Secret, breaker: CircuitBreaker) -> VlmRunClient:
    return VlmRunClient("https://api.test/v1", secret, transport=httpx.MockTransport(account), observer=breaker)


@pytest.mark.parametrize("status", [401, 403])
def test_a_rotated_key_is_reread_and_the_breaker_stays_closed(status, breaker):
    account = Account(status, valid="new-key")
    secret = Secret(cached="old-key", current="new-key")
    execution = client(account, secret, breaker).execute({"name": "a:v1", "inputs": {"file": "https://x/y"}})
    assert execution.id == "exec-1"
    assert account.keys == ["old-key", "new-key"]  # the refused POST, sent again once with the fresh key
    assert secret.reads == [False, True]
    assert not breaker.state(fresh=True).open


@pytest.mark.parametrize("status", [401, 403])
def test_a_key_refused_after_the_reread_opens_the_breaker_for_credentials(status, breaker):
    account = Account(status, valid=None, detail="Invalid API key")
    secret = Secret(cached="revoked", current="revoked")
    with pytest.raises(VlmRunAuthError, match=f"HTTP {status}"):
        client(account, secret, breaker).get_execution("exec-1")
    assert account.keys == ["revoked", "revoked"]  # once as cached, once after the re-read: no more
    assert secret.reads == [False, True]
    state = breaker.state(fresh=True)
    assert state.open and state.reason == Reason.CREDENTIALS and "Invalid API key" in (state.message or "")


def test_a_403_about_the_quota_is_not_a_key_problem(breaker):
    account = Account(403, valid=None, detail="Your monthly quota exceeded")
    secret = Secret(cached="good", current="good")
    with pytest.raises(VlmRunCreditsError):
        client(account, secret, breaker).execute({"name": "a:v1", "inputs": {"file": "https://x/y"}})
    assert account.keys == ["good"] and secret.reads == [False]  # no re-read, no second POST
    state = breaker.state(fresh=True)
    assert state.open and state.reason == Reason.CREDITS
