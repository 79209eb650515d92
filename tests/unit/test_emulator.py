"""The emulator's own controls: per-run config, per-request headers, auth, errors, stats, signed callbacks,
and the account's bad days (an outage, no credits, a revoked key) with the inputs each execution echoes."""

from __future__ import annotations

import json

import httpx
import pytest

from vlmwatch.flows.webhooks import verify_signature
from vlmwatch_local.emulator import Emulator, EmulatorConfig
from vlmwatch_local.harness.clock import Clock

CONTROL = "http://emulator.local/_emulator"


def make(
    config: EmulatorConfig | None = None, sent: list | None = None, clock: Clock | None = None
) -> tuple[Emulator, httpx.Client]:
    def send(url: str, body: bytes, headers: dict[str, str]) -> None:
        if sent is not None:
            sent.append((url, body, headers))

    emulator = Emulator(
        config or EmulatorConfig(),
        fetch=lambda url: (b"some text\n", "text/plain"),
        send=send,
        clock=clock or Clock(),
    )
    client = httpx.Client(
        base_url="http://emulator.local/v1",
        headers={"Authorization": f"Bearer {emulator.config.api_key}"},
        transport=httpx.WSGITransport(app=emulator.app),
    )
    return emulator, client


BODY = {"name": "a:v1", "batch": True, "inputs": {"file": "http://x/notes.txt"}}


def statuses(client: httpx.Client, execution_id: str, n: int) -> list[str]:
    return [client.get(f"/agent/executions/{execution_id}").json()["status"] for _ in range(n)]


def test_status_sequence_per_run_and_per_request():
    _, client = make(EmulatorConfig(status_sequence=["pending", "running", "paused", "running", "completed"]))
    first = client.post("/agent/execute", json=BODY).json()
    assert first["status"] == "pending"
    assert statuses(client, first["id"], 5) == ["running", "paused", "running", "completed", "completed"]

    custom = client.post("/agent/execute", json=BODY, headers={"X-Emulator-Status": "enqueued,completed"}).json()
    assert custom["status"] == "enqueued"
    assert statuses(client, custom["id"], 1) == ["completed"]


@pytest.mark.parametrize(("outcome", "final"), [("failed", "failed"), ("stuck", "running")])
def test_forced_outcomes_per_request(outcome, final):
    _, client = make()
    execution = client.post("/agent/execute", json=BODY, headers={"X-Emulator-Outcome": outcome}).json()
    assert statuses(client, execution["id"], 6)[-1] == final


def test_failure_and_stuck_rates_are_deterministic_per_seed():
    def outcomes(seed: int) -> list[str]:
        emulator, client = make(EmulatorConfig(failure_rate=0.3, stuck_rate=0.3, seed=seed))
        ids = [client.post("/agent/execute", json=BODY).json()["id"] for _ in range(20)]
        return [emulator.executions[i].outcome for i in ids]

    assert outcomes(7) == outcomes(7)
    assert {"completed", "failed", "stuck"} <= set(outcomes(7))


def test_config_endpoint_turns_on_429s_with_retry_after_and_5xx():
    _, client = make()
    assert client.post("http://emulator.local/_emulator/config", json={"rate_429": 1.0, "retry_after": 7}).json() == {
        "ok": True
    }
    limited = client.get("/agent/executions")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json()["error"]["type"] == "rate_limit_error"

    client.post("http://emulator.local/_emulator/config", json={"rate_429": 0.0, "rate_5xx": 1.0})
    assert client.get("/agent/executions").status_code == 503
    assert client.post("http://emulator.local/_emulator/config", json={"no_such_knob": 1}).status_code == 400
    stats = client.get("http://emulator.local/_emulator/stats").json()
    assert stats["requests"]["429"] == 1 and stats["requests"]["5xx"] == 1


def test_first_n_requests_fail_then_recover():
    _, client = make(EmulatorConfig(first_429=2, first_5xx=1, retry_after=0))
    codes = [client.get("/agent/executions").status_code for _ in range(4)]
    assert codes == [429, 429, 503, 200]


def test_bearer_auth_and_error_shapes():
    _, client = make()
    assert client.get("/agent/executions", headers={"Authorization": "Bearer nope"}).json() == {
        "detail": "Invalid API key"
    }
    missing = client.get("/agent/executions/nope")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    bad = client.post("/agent/execute", json={"batch": True})
    assert bad.status_code == 400 and "name" in bad.json()["error"]["message"]


def test_callbacks_are_signed_as_the_sdk_verifies_them():
    from vlmrun.common.webhook import verify_webhook

    sent: list = []
    emulator, client = make(EmulatorConfig(webhook_secret="s3cret", step_seconds=0.0001), sent)
    client.post("/agent/execute", json={**BODY, "callback_url": "https://hooks.example/x"})
    emulator.tick()

    ((url, body, headers),) = sent
    assert url == "https://hooks.example/x"
    assert json.loads(body)["status"] == "completed"
    assert verify_webhook(body, headers["X-VLMRun-Signature"], "s3cret")  # the official SDK's check
    assert verify_signature("s3cret", body, headers["X-VLMRun-Signature"])  # ours agrees
    emulator.tick()
    assert len(sent) == 1  # one callback per execution


def test_real_work_on_text_and_unreadable_input():
    emulator, client = make()
    done = client.post("/agent/execute", json=BODY).json()
    result = statuses(client, done["id"], 3)
    assert result[-1] == "completed"
    response = client.get(f"/agent/executions/{done['id']}").json()["response"]
    assert response["file"]["lines"] == 1 and response["file"]["words"] == 2
    assert response["artifacts"]["preview"].startswith("img_")

    emulator._fetch = lambda url: (b"\xff\xfe\x00 not utf-8", "application/octet-stream")
    odd = client.post("/agent/execute", json={**BODY, "inputs": {"file": "http://x/blob.bin"}}).json()
    final = client.get(f"/agent/executions/{odd['id']}").json()
    for _ in range(3):
        final = client.get(f"/agent/executions/{odd['id']}").json()
    assert final["status"] == "failed"
    assert "unsupported file type" in final["error"]["message"]


# -- the account's bad days -------------------------------------------------------------------------


def faults(client: httpx.Client) -> dict:
    return client.get(f"{CONTROL}/stats").json()["faults"]


def test_an_outage_answers_every_api_route_503_for_its_window_on_the_emulators_clock():
    clock = Clock(1_800_000_000)
    emulator, client = make(clock=clock)
    done = client.post("/agent/execute", json=BODY).json()
    emulator.outage(30)

    for response in (
        client.get("/agent/executions"),
        client.get(f"/agent/executions/{done['id']}"),
        client.post("/agent/execute", json=BODY),
        client.get("/health"),
        client.get("/agent/executions", headers={"Authorization": "Bearer wrong"}),  # down before auth
    ):
        assert response.status_code == 503
        assert response.json() == {"detail": "Service Unavailable"}
    assert len(emulator.executions) == 1
    assert client.get(f"{CONTROL}/stats").status_code == 200  # the controls are not the API

    clock.advance(29.9)
    assert client.get("/agent/executions").status_code == 503
    clock.advance(0.1)
    assert client.get("/agent/executions").status_code == 200
    record = faults(client)
    assert record["active"] == []
    assert record["during"] == {"outage": 6} and record["refused"] == {"outage": 6}
    assert record["windows"] == [{"kind": "outage", "start": 1_800_000_000, "end": 1_800_000_030, "seconds": 30}]


def test_an_outage_through_the_config_route_starts_now_or_when_told():
    clock = Clock(1_800_000_000)
    _, client = make(clock=clock)
    assert client.post(f"{CONTROL}/config", json={"outage_seconds": 10}).json() == {"ok": True}
    assert client.get("/agent/executions").status_code == 503
    clock.advance(10)
    assert client.get("/agent/executions").status_code == 200

    client.post(f"{CONTROL}/config", json={"outage_start": 1_800_000_100, "outage_seconds": 5})
    assert client.get("/agent/executions").status_code == 200  # not yet
    clock.advance(90)
    assert client.get("/agent/executions").status_code == 503
    clock.advance(5)
    assert client.get("/agent/executions").status_code == 200
    assert [(w["start"], w["seconds"]) for w in faults(client)["windows"]] == [(1_800_000_000, 10), (1_800_000_100, 5)]


def test_out_of_credits_refuses_new_executions_with_402_until_topped_up_and_reads_keep_working():
    emulator, client = make(EmulatorConfig(credits_executions=2))
    first = client.post("/agent/execute", json=BODY)
    assert first.status_code == 200
    assert client.post("/agent/execute", json=BODY).status_code == 200
    assert emulator.config.credits_executions == 0

    refused = client.post("/agent/execute", json=BODY)
    assert refused.status_code == 402
    assert refused.json() == {"detail": "Insufficient credits"}
    assert len(emulator.executions) == 2  # nothing created
    assert client.get(f"/agent/executions/{first.json()['id']}").status_code == 200
    assert len(client.get("/agent/executions").json()) == 2
    record = faults(client)
    assert record["active"] == ["no_credits"] and record["credits_executions"] == 0
    assert record["during"] == {"no_credits": 3} and record["refused"] == {"no_credits": 1}

    emulator.top_up(1)
    assert client.post("/agent/execute", json=BODY).status_code == 200
    assert client.post("/agent/execute", json=BODY).status_code == 402
    assert client.post(f"{CONTROL}/config", json={"credits_executions": None}).json() == {"ok": True}
    assert client.post("/agent/execute", json=BODY).status_code == 200
    emulator.top_up()
    assert emulator.config.credits_executions is None
    assert len(emulator.executions) == 4
    assert [w["kind"] for w in faults(client)["windows"]] == ["no_credits", "no_credits"]
    assert all(w["end"] is not None for w in faults(client)["windows"])


def test_a_revoked_key_answers_every_api_request_401_until_restored():
    emulator, client = make()
    emulator.revoke_key()
    for response in (client.get("/agent/executions"), client.post("/agent/execute", json=BODY), client.get("/health")):
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid API key"}
    assert emulator.executions == {}
    emulator.restore_key()
    assert client.get("/agent/executions").status_code == 200

    client.post(f"{CONTROL}/config", json={"key_revoked": True})
    assert client.get("/agent/executions").status_code == 401
    client.post(f"{CONTROL}/config", json={"key_revoked": False})
    assert client.get("/agent/executions").status_code == 200
    record = faults(client)
    assert record["during"] == {"revoked_key": 4} and record["refused"] == {"revoked_key": 4}
    assert [w["kind"] for w in record["windows"]] == ["revoked_key", "revoked_key"]


@pytest.mark.parametrize("echo", [True, False])
def test_executions_echo_the_inputs_and_inline_config_they_were_created_with(echo):
    from vlmrun.client.types import AgentExecutionResponse

    _, client = make(EmulatorConfig(echo_inputs=echo))
    inline = {"prompt": "Describe it.", "json_schema": {"type": "object"}}
    body = {"batch": True, "inputs": {"file": "http://x/notes.txt?X-Amz-Signature=abc"}, "config": inline}
    created = client.post("/agent/execute", json=body).json()
    named = client.post("/agent/execute", json=BODY).json()
    fetched = client.get(f"/agent/executions/{created['id']}").json()
    listed = {e["id"]: e for e in client.get("/agent/executions").json()}

    for shown in (created, fetched, listed[created["id"]]):
        assert shown.get("inputs") == (body["inputs"] if echo else None)
        assert shown.get("config") == (inline if echo else None)
        AgentExecutionResponse.model_validate(shown)  # the SDK's model still reads it
    assert named.get("inputs") == (BODY["inputs"] if echo else None)
    assert "config" not in named and "config" not in listed[named["id"]]


@pytest.mark.parametrize("scope", ["account", "endpoint"])
def test_the_plans_per_minute_limit_answers_429_until_the_next_minute(scope):
    clock = Clock(1_800_000_000)  # on a minute boundary
    emulator, client = make(EmulatorConfig(requests_per_minute=3, rate_limit_scope=scope), clock=clock)
    created = client.post("/agent/execute", json=BODY).json()
    assert [client.get(f"/agent/executions/{created['id']}").status_code for _ in range(3)] == (
        [200, 200, 429] if scope == "account" else [200, 200, 200]
    )
    refused = client.get(f"/agent/executions/{created['id']}")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    # Every endpoint counts: artifact lists and downloads too (per route in "endpoint" scope).
    listed = client.get("/artifacts/list", params={"execution_id": created["id"]})
    assert listed.status_code == (429 if scope == "account" else 200)
    clock.advance(45)
    assert client.get(f"/agent/executions/{created['id']}").headers["Retry-After"] == "15"
    clock.advance(15)  # the next minute: the count starts again
    assert client.get(f"/agent/executions/{created['id']}").status_code == 200
    served = sum(emulator.faults.served_by_minute.values())
    assert served + emulator.requests["rate_limited"] == 8  # one POST, six GETs, one list: served or refused
