"""One request budget for the deployment: starts and polls draw on it, work waits, nothing fails."""

from __future__ import annotations

from collections import Counter

import boto3
import httpx
import pytest

from helpers import drop, jobs, read_json, result_key
from vlmwatch.adapters.throttle import Backpressure, RequestBudget
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.adapters.vlmrun.gating import RequestDeferredError
from vlmwatch_local.cloud.loops import LocalAws


def budget(stack, clock, per_window: int = 10) -> RequestBudget:
    return RequestBudget(boto3.client("dynamodb"), stack.table, per_window, window_seconds=60, clock=clock)


def test_a_window_grants_its_limit_then_sends_work_to_the_next_window(stack, clock):
    shared = budget(stack, clock)
    other_function = budget(stack, clock)  # another process: the same rows

    answers = [(shared if i % 2 else other_function).take() for i in range(25)]

    assert answers.count(None) == 10
    window_end = (int(clock() // 60) + 1) * 60
    assert all(window_end <= a < window_end + 30 for a in answers if a is not None)
    clock.advance(60)
    assert shared.take() is None  # a new window, a new allowance
    assert jobs(stack) == []  # budget rows are not jobs


def test_a_429_halves_the_limit_for_everyone_and_it_grows_back(stack, clock):
    shared = budget(stack, clock)
    shared.shrink()
    other = budget(stack, clock)
    assert other.limit() == 5
    clock.advance(60 * 5)  # the recovery period
    assert other.limit() == 10


class Recording(httpx.BaseTransport):
    """The emulator, with the time of every start and status request."""

    def __init__(self, inner: httpx.BaseTransport, clock) -> None:
        self.inner, self.clock, self.sent = inner, clock, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/agent/"):
            self.sent.append(int(self.clock() // 60))
        return self.inner.handle_request(request)


def test_a_drop_at_3_requests_a_minute_is_all_delivered_within_the_budget(stack, wire, emulator, clock):
    transport = Recording(httpx.WSGITransport(app=emulator.app), clock)
    # One poll at a time: in-process moto does not make concurrent conditional updates atomic (DynamoDB does).
    wire(
        transport=transport,
        REQUESTS_PER_MINUTE="3",
        POLL_BASE_SECONDS="20",
        POLL_CAP_SECONDS="60",
        POLLER_CONCURRENCY="1",
    )
    local = LocalAws(stack)
    emulator.config.status_sequence = ["running", "completed"]
    for i in range(8):
        drop(stack, f"budget/{i}.txt", f"file {i}".encode())

    local.pump_ingest()
    for _ in range(60):
        clock.advance(20)
        emulator.tick()
        local.run_poller()
        local.pump_stream()
        if all(j["status"] == "delivered" for j in jobs(stack)):
            break

    rows = jobs(stack)
    assert len(rows) == 8 and {j["outcome"] for j in rows} == {"completed"}  # nothing failed for want of budget
    per_minute = Counter(transport.sent)
    assert max(per_minute.values()) <= 3, per_minute
    assert len(emulator.executions) == 8


def test_one_list_request_tells_which_of_many_due_jobs_are_still_running(stack, wire, emulator, clock):
    wire(POLL_BASE_SECONDS="10", POLL_CAP_SECONDS="10", LIST_POLL_MIN_JOBS="5")
    local = LocalAws(stack)
    emulator.config.step_seconds = 100  # still running at the first polls, done after 300 s
    emulator.config.status_sequence = ["running", "running", "running"]
    for i in range(8):
        drop(stack, f"many/{i}.txt", f"file {i}".encode())
    local.pump_ingest()

    clock.advance(15)
    local.run_poller()

    assert emulator.requests["GET /v1/agent/executions"] == 1  # one list for eight running jobs
    assert emulator.requests["GET /v1/agent/executions/<exec_id>"] == 0
    assert {j["remote_status"] for j in jobs(stack)} == {"running"}

    for _ in range(40):
        clock.advance(15)
        emulator.tick()
        local.run_poller()
        local.pump_stream()
    rows = jobs(stack)
    assert {j["outcome"] for j in rows} == {"completed"}
    # The list answers the executions' own records: a completed one with its response needs no GET by id.
    assert emulator.requests["GET /v1/agent/executions/<exec_id>"] == 0
    assert all(j["status"] == "delivered" for j in rows)
    for i in range(8):
        assert read_json(stack, result_key(f"many/{i}.txt"))["response"]["file"]["text"] == f"file {i}"


def test_every_request_the_client_sends_draws_on_the_budget_once(stack, clock):
    sent: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if request.url.path.endswith("/artifacts/list"):
            return httpx.Response(200, json={"items": [{"object_id": "img_0a0b0c"}]})
        return httpx.Response(200, json={"id": "exec-1", "status": "running"})

    pressure = Backpressure(clock=clock, budget=budget(stack, clock, per_window=3))
    client = VlmRunClient("https://api.test/v1", "k", transport=httpx.MockTransport(api), gate=pressure)

    assert pressure.admit("poll") is None  # a flow admits its poll...
    client.get_execution("exec-1")  # ...and the request spends that grant, not a second one
    client.list_artifacts("exec-1")  # an artifact list is a request of the budget like any other
    client.list_artifacts("exec-1")
    with pytest.raises(RequestDeferredError) as refused:
        client.list_artifacts("exec-1")  # the window's three are spent: not sent

    assert len(sent) == 3
    window_end = (int(clock() // 60) + 1) * 60
    assert window_end <= refused.value.until < window_end + 30
    assert pressure.hits == 0 and budget(stack, clock, per_window=3).limit() == 3  # ours: the budget does not shrink
    clock.advance(60)
    assert client.list_artifacts("exec-1").items[0].object_id == "img_0a0b0c"  # the next window
