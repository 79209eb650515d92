"""The VLM Run client's retry policy, against httpx mock transports and the emulator."""

from __future__ import annotations

import json

import httpx
import pytest

from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.core.errors import (
    VlmRunAmbiguousSubmitError,
    VlmRunError,
    VlmRunRateLimitedError,
    VlmRunRejectedError,
    VlmRunUnavailableError,
)
from vlmwatch_local.emulator import Emulator

EXECUTION = {
    "id": "exec-1",
    "name": "a:v1",
    "status": "running",
    "created_at": "2026-11-25T12:00:00Z",
    "usage": {"credits_used": 1},
}


class Script:
    """A transport that answers from a list and records every request."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Script, sleeps: list[float] | None = None, **kw) -> VlmRunClient:
    return VlmRunClient(
        "https://api.test/v1",
        "secret-key",
        transport=httpx.MockTransport(script),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        **kw,
    )


def test_requests_carry_bearer_auth_and_explicit_timeouts():
    script = Script(httpx.Response(200, json=EXECUTION))
    c = client(script)
    c.get_execution("exec-1")
    request = script.requests[0]
    assert request.headers["Authorization"] == "Bearer secret-key"
    assert request.url == "https://api.test/v1/agent/executions/exec-1"
    assert request.extensions["timeout"] == {"connect": 3.0, "read": 15.0, "write": 15.0, "pool": 15.0}


def test_429_honours_retry_after_then_succeeds():
    sleeps: list[float] = []
    script = Script(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}}),
        httpx.Response(200, json=EXECUTION),
    )
    assert client(script, sleeps).get_execution("exec-1").status == "running"
    assert sleeps == [2.0]


def test_429_with_long_retry_after_is_handed_to_the_caller_without_sleeping():
    sleeps: list[float] = []
    script = Script(httpx.Response(429, headers={"Retry-After": "60"}, json={"error": {"message": "slow down"}}))
    with pytest.raises(VlmRunRateLimitedError) as info:
        client(script, sleeps).execute({"name": "a:v1"})
    assert info.value.retry_after == 60
    assert sleeps == []
    assert len(script.requests) == 1


def test_get_retries_5xx_and_transport_errors():
    script = Script(
        httpx.Response(502, text="bad gateway"), httpx.ReadTimeout("slow"), httpx.Response(200, json=EXECUTION)
    )
    assert client(script).get_execution("exec-1").id == "exec-1"
    assert len(script.requests) == 3


def test_get_gives_up_after_max_attempts_with_the_reason():
    script = Script(*(httpx.Response(503, json={"error": {"message": "maintenance"}}) for _ in range(3)))
    with pytest.raises(VlmRunUnavailableError, match="HTTP 503: maintenance"):
        client(script).get_execution("exec-1")


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"detail": "internal error"}),
        httpx.Response(504, text="gateway timeout"),
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("connection dropped"),
    ],
)
def test_execute_is_never_resent_after_an_ambiguous_failure(failure):
    script = Script(failure, httpx.Response(200, json=EXECUTION))
    with pytest.raises(VlmRunAmbiguousSubmitError):
        client(script).execute({"name": "a:v1", "batch": True})
    assert len(script.requests) == 1


def test_execute_retries_when_the_connection_was_never_made():
    script = Script(httpx.ConnectError("refused"), httpx.Response(200, json=EXECUTION))
    assert client(script).execute({"name": "a:v1", "batch": True}).id == "exec-1"
    assert len(script.requests) == 2
    assert json.loads(script.requests[1].content) == {"name": "a:v1", "batch": True}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "Agent not found", "type": "not_found", "id": "req_1"}}, "Agent not found"),
        ({"detail": "Invalid API key"}, "Invalid API key"),
        ({"detail": [{"loc": ["body", "inputs"], "msg": "field required"}]}, "field required"),
    ],
)
def test_4xx_is_rejected_with_the_api_message(body, message):
    script = Script(httpx.Response(404, json=body))
    with pytest.raises(VlmRunRejectedError, match=message):
        client(script).execute({"name": "x"})
    assert len(script.requests) == 1


def test_presigned_upload_does_not_send_the_api_key_to_the_upload_url():
    emulator = Emulator()
    c = VlmRunClient(
        "http://emulator.local/v1", emulator.config.api_key, transport=httpx.WSGITransport(app=emulator.app)
    )
    info = c.upload_file_presigned("big.txt", b"x" * 1000, "text/plain")
    assert info.bytes == 1000
    assert emulator.uploads[info.id] == b"x" * 1000


def test_401_rereads_a_rotated_key_once_then_succeeds():
    keys = iter(["old-key", "new-key"])
    refreshes: list[bool] = []

    def provider(refresh: bool) -> str:
        refreshes.append(refresh)
        return next(keys)

    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] != "Bearer new-key":
            return httpx.Response(401, json={"detail": "Invalid API key"})
        return httpx.Response(200, json=EXECUTION)

    c = VlmRunClient("https://api.test/v1", provider, transport=httpx.MockTransport(api))
    assert c.execute({"name": "a:v1", "batch": True}).id == "exec-1"
    assert seen == ["Bearer old-key", "Bearer new-key"]
    assert refreshes == [False, True]


def test_bad_credentials_raise_an_auth_error_not_a_rejection_of_the_job():
    from vlmwatch.core.errors import VlmRunAuthError

    script = Script(
        httpx.Response(401, json={"detail": "Invalid API key"}), httpx.Response(401, json={"detail": "Invalid API key"})
    )
    c = VlmRunClient("https://api.test/v1", lambda refresh: "wrong", transport=httpx.MockTransport(script))
    with pytest.raises(VlmRunAuthError, match="Invalid API key"):
        c.get_execution("exec-1")
    assert not isinstance(VlmRunAuthError("x"), VlmRunRejectedError)


@pytest.mark.parametrize(
    ("status", "message", "account"),
    [
        (402, "Payment required", True),
        (400, "Insufficient credits to run this agent", True),
        (403, "Your monthly quota exceeded", True),
        (400, "json_schema: property 'payment_terms' is not a valid type", False),
        (422, "credit_card_number must be a string", False),
    ],
)
def test_only_the_accounts_money_is_an_account_refusal(status, message, account):
    from vlmwatch.core.errors import VlmRunAccountError, VlmRunRejectedError

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": message})

    client = VlmRunClient("https://api.test/v1", "k", transport=httpx.MockTransport(api))
    with pytest.raises(VlmRunAccountError if account else VlmRunRejectedError):
        client.execute({"name": "a:1", "inputs": {"file": "https://x/y"}})


@pytest.mark.parametrize(
    ("base", "upload_url", "allowed"),
    [
        ("https://api.vlm.run/v1", "https://storage.googleapis.com/vlm-uploads/f1?X-Goog-Signature=abc", True),
        ("https://api.vlm.run/v1", "https://api.vlm.run/uploads/f1", True),
        ("https://api.vlm.run/v1", "https://uploads.vlm.run/f1", True),  # VLM Run's own domain
        ("https://api.vlm.run/v1", "http://storage.googleapis.com/vlm-uploads/f1", False),  # not https
        ("https://api.vlm.run/v1", "https://attacker.example.com/collect", False),
        ("https://api.vlm.run/v1", "https://vlm.run.attacker.example.com/f1", False),
        ("https://api.vlm.run/v1", "http://169.254.169.254/latest/meta-data", False),
        ("https://api.vlm.run/v1", "http://localhost:9001/runtime", False),  # local, but not VLM Run's host
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:8765/_uploads/f1", True),  # the local emulator
    ],
)
def test_presigned_upload_goes_only_over_https_to_vlmrun_or_known_storage(base, upload_url, allowed):
    puts: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            puts.append(str(request.url))
            return httpx.Response(200)
        if request.url.path.endswith("/files/presigned-url"):
            return httpx.Response(200, json={"id": "f1", "url": upload_url, "content_type": "text/plain"})
        return httpx.Response(200, json={"id": "f1", "bytes": 3})

    c = VlmRunClient(base, "secret-key", transport=httpx.MockTransport(api), sleep=lambda _: None)
    if allowed:
        assert c.upload_file_presigned("big.txt", b"abc", "text/plain").bytes == 3
        assert puts == [upload_url]
    else:
        with pytest.raises(VlmRunError, match="presigned upload refused"):
            c.upload_file_presigned("big.txt", b"abc", "text/plain")
        assert puts == []  # the file's bytes went nowhere


def test_presigned_upload_hosts_can_be_added():
    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files/presigned-url"):
            return httpx.Response(200, json={"id": "f1", "url": "https://files.partner-cdn.net/f1"})
        return httpx.Response(200, json={"id": "f1", "bytes": 3})

    c = VlmRunClient(
        "https://api.vlm.run/v1", "k", transport=httpx.MockTransport(api), upload_hosts=("files.partner-cdn.net",)
    )
    assert c.upload_file_presigned("big.txt", b"abc", "text/plain").id == "f1"


@pytest.mark.parametrize(
    "body",
    [
        {"namespace_id": "exec-1", "items": [{"object_id": "img_0a0b0c", "filename": None}, {"object_id": "../x"}]},
        {"data": [{"id": "img_0a0b0c"}]},
        ["img_0a0b0c", 7, None],
        {"artifacts": [{"object_id": "img_0a0b0c", "filename": {"odd": 1}}]},
    ],
)
def test_the_artifact_list_is_read_in_any_of_its_likely_shapes(body):
    # The SDK does not implement GET /artifacts/list yet: its shape is read leniently, ids strictly.
    c = client(Script(httpx.Response(200, json=body)))
    assert [item.object_id for item in c.list_artifacts("exec-1").items] == ["img_0a0b0c"]
