"""One request budget for the deployment: starts and polls draw on it, work waits, nothing fails."""

from __future__ import annotations

from collections import Counter

import boto3
import httpx

from helpers import drop, jobs
from vlmwatch.adapters.throttle import RequestBudget
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
    # Every result came from the execution's own record (GET by id), never from a list item.
    assert emulator.requests["GET /v1/agent/executions/<exec_id>"] >= 8
    assert all(j["status"] == "delivered" for j in rows)
