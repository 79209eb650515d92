"""VLM Run's bad days are the account's, not the files': work waits on its row, never fails or storms.

The faults are VLM Run's own answers, injected in front of the emulator at the HTTP layer: a whole-service
outage (503 to everything), an account out of credits (402 to every POST, nothing created), a revoked key.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from helpers import drop, jobs, read_json, result_key
from vlmwatch.adapters.breaker import Reason
from vlmwatch.runtime import wiring


class AccountFaults(httpx.BaseTransport):
    """VLM Run as it is on a bad day, in front of the emulator: ``mode`` is None, "down", "credits" or "revoked"."""

    def __init__(self, app) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self.mode: str | None = None
        self.sent: Counter[str] = Counter()  # per mode: every request that reached "VLM Run"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_post = request.method == "POST" and request.url.path.endswith("/agent/execute")
        self.sent[f"{self.mode or 'ok'} {'POST' if is_post else request.method}"] += 1
        if self.mode == "down":
            return httpx.Response(503, json={"detail": "Service Unavailable"}, request=request)
        if self.mode == "revoked":
            return httpx.Response(401, json={"detail": "Invalid API key"}, request=request)
        if self.mode == "credits" and is_post:
            return httpx.Response(402, json={"detail": "Insufficient credits"}, request=request)
        return self._inner.handle_request(request)

    def during(self, mode: str) -> int:
        return sum(n for key, n in self.sent.items() if key.startswith(f"{mode} "))


def settle(local, clock, rounds: int = 30, every: float = 20) -> None:
    for _ in range(rounds):
        local.step()
        rows = jobs(local.stack)
        if rows and all(j["status"] in ("delivered", "skipped") for j in rows):
            return
        clock.advance(every)


def test_out_of_credits_leaves_files_waiting_and_they_complete_after_the_top_up(stack, local, wire, emulator, clock):
    vlmrun = AccountFaults(emulator.app)
    wire(transport=vlmrun, BREAKER_PROBE_SECONDS="30", BREAKER_RAMP_SECONDS="60")
    vlmrun.mode = "credits"
    for i in range(6):
        drop(stack, f"credits/{i}.txt", f"invoice {i}".encode())
    assert local.pump_ingest() == 6

    rows = jobs(stack)
    assert [j["status"] for j in rows] == ["received"] * 6  # waiting on their rows, none failed
    assert vlmrun.during("credits") == 1  # the first 402 opened the breaker: nobody else asked
    state = wiring.breaker().state(fresh=True)
    assert state.open and state.reason == Reason.CREDITS and "Insufficient credits" in (state.message or "")
    assert all("out of credits" in (j.get("error") or j.get("last_poll_error") or "") for j in rows)

    # Two minutes without credits: one probe (a real submit) per 30 s interval for the whole deployment.
    for _ in range(12):
        clock.advance(10)
        local.step()
    assert vlmrun.during("credits") <= 1 + 120 // 30 + 1
    assert all(j["status"] == "received" for j in jobs(stack))

    vlmrun.mode = None  # topped up
    settle(local, clock)
    rows = jobs(stack)
    assert [(j["status"], j["outcome"]) for j in rows] == [("delivered", "completed")] * 6
    for i in range(6):
        assert read_json(stack, result_key(f"credits/{i}.txt"))["execution"]["status"] == "completed"
    assert not wiring.breaker().state(fresh=True).open


@pytest.mark.long(seconds=12)
def test_an_outage_with_sixty_files_in_flight_sends_one_probe_per_interval(stack, local, wire, emulator, clock):
    vlmrun = AccountFaults(emulator.app)
    settings = wire(transport=vlmrun, BREAKER_PROBE_SECONDS="15", POLL_BASE_SECONDS="5", POLL_CAP_SECONDS="5")
    for i in range(60):
        drop(stack, f"storm/{i:02d}.txt", f"file {i}".encode())
    local.pump_ingest()
    assert {j["status"] for j in jobs(stack)} == {"submitted"}

    vlmrun.mode = "down"
    opened_after = None
    for tick in range(12):  # 60 s of outage, the poller every 5 s
        clock.advance(5)
        local.run_poller()
        if opened_after is None and wiring.breaker().state(fresh=True).open:
            opened_after = vlmrun.during("down")
            opened_at = tick
    assert opened_after is not None
    # Until it opened: the calls that open it, each tried once more at most, and what was in flight.
    assert opened_after <= 2 * settings.breaker_failures + settings.poller_concurrency
    probes = vlmrun.during("down") - opened_after
    intervals = (12 - opened_at) * 5 // 15 + 1
    assert probes <= intervals, f"{probes} requests after it opened, {intervals} probe intervals"
    assert all(j["status"] == "submitted" for j in jobs(stack))  # nothing failed or timed out

    vlmrun.mode = None
    settle(local, clock, every=10)
    assert [j["outcome"] for j in jobs(stack)] == ["completed"] * 60


def test_a_deadline_that_passes_during_an_outage_moves_by_the_outage(stack, local, wire, emulator, clock):
    vlmrun = AccountFaults(emulator.app)
    wire(
        transport=vlmrun,
        JOB_DEADLINE_SECONDS="120",
        BREAKER_FAILURES="1",
        BREAKER_PROBE_SECONDS="30",
        POLL_BASE_SECONDS="10",
        POLL_CAP_SECONDS="10",
    )
    drop(stack, "late/report.txt", b"a long report")
    local.pump_ingest()
    (row,) = jobs(stack)
    assert row["status"] == "submitted"

    vlmrun.mode = "down"  # ten minutes of outage: far past the job's 120 s deadline
    for _ in range(60):
        clock.advance(10)
        local.step()
    (row,) = jobs(stack)
    assert row["status"] == "submitted" and wiring.breaker().state(fresh=True).open

    vlmrun.mode = None
    settle(local, clock, every=10)
    (row,) = jobs(stack)
    assert (row["status"], row["outcome"]) == ("delivered", "completed")  # polled and delivered, not timed out


def test_a_revoked_key_opens_the_breaker_and_work_resumes_when_the_key_works_again(stack, local, wire, emulator, clock):
    vlmrun = AccountFaults(emulator.app)
    wire(transport=vlmrun, BREAKER_PROBE_SECONDS="30")
    vlmrun.mode = "revoked"
    for i in range(4):
        drop(stack, f"key/{i}.txt", b"text")
    local.pump_ingest()
    state = wiring.breaker().state(fresh=True)
    assert state.open and state.reason == Reason.CREDENTIALS
    assert all(j["status"] == "received" for j in jobs(stack))
    vlmrun.mode = None
    settle(local, clock)
    assert [j["outcome"] for j in jobs(stack)] == ["completed"] * 4


def test_pause_stops_intake_and_resume_restarts_it_without_a_lost_file(stack, local, wire, emulator, clock):
    vlmrun = AccountFaults(emulator.app)
    wire(transport=vlmrun, BREAKER_PROBE_SECONDS="30", BREAKER_RAMP_SECONDS="30")
    wiring.breaker().pause("plan change at 10:00")
    for i in range(5):
        drop(stack, f"paused/{i}.txt", b"text")
    local.pump_ingest()
    for _ in range(10):
        clock.advance(30)
        local.step()
    assert sum(vlmrun.sent.values()) == 0  # not one request while paused (no probes either)
    assert all(j["status"] == "received" for j in jobs(stack))
    assert all("paused" in (j.get("last_poll_error") or "") for j in jobs(stack))

    wiring.breaker().resume()
    settle(local, clock)
    assert [j["outcome"] for j in jobs(stack)] == ["completed"] * 5


def test_a_job_that_cannot_start_within_the_submit_deadline_fails_with_the_breakers_reason(
    stack, local, wire, emulator, clock
):
    vlmrun = AccountFaults(emulator.app)
    wire(transport=vlmrun, SUBMIT_DEADLINE_SECONDS="300", BREAKER_PROBE_SECONDS="30")
    vlmrun.mode = "credits"
    drop(stack, "never/started.txt", b"text")
    local.pump_ingest()
    for _ in range(20):
        clock.advance(30)
        local.step()
    (row,) = jobs(stack)
    assert row["outcome"] == "failed"
    message = read_json(stack, "results/never/started.txt.vlmwatch/error.json")["error"]["message"]
    assert "out of credits" in message and "circuit breaker open" in message


def test_only_a_started_execution_closes_an_out_of_credits_breaker(stack, wire, clock):
    wire()
    breaker = wiring.breaker()
    breaker.open(Reason.CREDITS, "HTTP 402: Insufficient credits")
    breaker.succeeded()  # a callback's re-fetch or an artifact download went through: reads need no credits
    assert breaker.state(fresh=True).open
    breaker.succeeded(started=True)  # a POST /agent/execute went through: credits are back
    state = breaker.state(fresh=True)
    assert not state.open and state.ramp_from == int(clock())


def test_a_probe_never_closes_a_pause(stack, wire, clock):
    wire()
    breaker = wiring.breaker()
    breaker.pause("maintenance")
    breaker.succeeded(started=True)  # a request already in flight when the operator paused
    breaker.open(Reason.UNAVAILABLE, "HTTP 503")  # and an automatic reason does not replace the manual one
    state = breaker.state(fresh=True)
    assert state.open and state.reason == Reason.PAUSED and state.message == "maintenance"
    assert breaker.admit("start") is not None and breaker.admit("poll") is not None
    assert breaker.state(fresh=True).probes == 0


def test_an_outage_never_replaces_a_known_account_refusal_and_two_resumes_count_the_downtime_once(stack, wire, clock):
    wire()
    breaker = wiring.breaker()
    breaker.open(Reason.CREDITS, "HTTP 402: Insufficient credits")
    breaker.open(Reason.UNAVAILABLE, "HTTP 503")  # a 5xx later must not make it closable by any GET
    assert breaker.state(fresh=True).reason == Reason.CREDITS
    breaker.open(Reason.CREDENTIALS, "HTTP 401")  # a refusal of the key says more than the credits did
    assert breaker.state(fresh=True).reason == Reason.CREDENTIALS
    clock.advance(100)
    breaker.resume()
    breaker.resume()  # the CLI and the poller's budget release, say: the second finds it closed
    assert breaker.state(fresh=True).downtime == 100


def test_the_budget_never_lifts_an_operators_pause(stack, wire, clock):
    wire(MONTHLY_CREDIT_BUDGET="1")
    breaker = wiring.breaker()
    breaker.pause("quarter close")
    wiring.ledger().record(5)  # over budget while paused: the pause stays the reason
    state = breaker.state(fresh=True)
    assert state.reason == Reason.PAUSED
    clock.advance(40 * 86400)  # a new month: the budget's release must not resume an operator's pause
    assert not wiring.ledger().release_if_within_budget()
    assert breaker.state(fresh=True).open


def test_a_probe_answered_429_is_never_sent_again_on_a_grant_an_earlier_flow_left(stack, clock):
    """The chaos credits run saw POSTs in pairs ~60 ms apart while the breaker was open: the probe met a 429
    (Retry-After 0.05 s) and its retry went out on a grant an earlier flow on the thread admitted and never
    sent (a submit whose claim was lost), past the breaker. A grant is its own flow's: the retry asks the
    breaker, which says wait."""
    import boto3

    from vlmwatch.adapters.breaker import CircuitBreaker
    from vlmwatch.adapters.throttle import Backpressure
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.adapters.vlmrun.gating import RequestDeferredError
    from vlmwatch.core.errors import VlmRunRateLimitedError

    sent: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "Too Many Requests"})

    breaker = CircuitBreaker(boto3.client("dynamodb"), stack.table, probe_seconds=30, clock=clock)
    pressure = Backpressure(clock=clock, breaker=breaker)
    client = VlmRunClient(
        "https://api.test/v1",
        "k",
        transport=httpx.MockTransport(busy),
        gate=pressure,
        observer=breaker,
        sleep=lambda _: None,
    )
    assert pressure.admit("start") is None  # a submit admitted, then lost its claim: nothing sent
    breaker.open(Reason.CREDITS, "HTTP 402: Insufficient credits")
    clock.advance(31)
    assert pressure.admit("start") is None  # this submit is the interval's probe
    with pytest.raises(VlmRunRateLimitedError):
        client.execute({"agent_name": "doc-extractor:v1", "inputs": {}})
    assert sent == ["POST /v1/agent/execute"]  # the probe, once; its retry waits with everyone else
    assert breaker.state(fresh=True).probes == 1

    # And a flow that gives up what it admitted leaves nothing for a request that never asked the gate.
    clock.advance(31)
    assert pressure.admit("start") is None  # the next probe...
    pressure.forfeit()  # ...whose flow sent nothing
    with pytest.raises(RequestDeferredError):
        client.list_executions()  # polls wait while the credits are out
    assert len(sent) == 1
