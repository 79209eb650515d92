"""An ambiguous submit is recorded and reconciled, never blindly re-sent."""

from __future__ import annotations

import httpx

from helpers import drop, jobs, output_keys
from vlmwatch_local.loops import LocalAws


class LoseResponse(httpx.BaseTransport):
    """Forwards to the emulator, but the first POST /agent/execute 'times out'.

    ``reach_server`` decides whether the request got there (the execution exists) or not.
    """

    def __init__(self, app, *, reach_server: bool) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._reach = reach_server
        self.tripped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute") and not self.tripped:
            self.tripped = True
            if self._reach:
                self._inner.handle_request(request)
            raise httpx.ReadTimeout("read timed out", request=request)
        return self._inner.handle_request(request)


def settle(local: LocalAws, clock, rounds: int = 12) -> None:
    for _ in range(rounds):
        local.step()
        clock.advance(120)


def test_lost_response_is_adopted_not_resent(stack, wire, emulator, clock):
    transport = LoseResponse(emulator.app, reach_server=True)
    wire(transport=transport)
    local = LocalAws(stack)
    drop(stack, "ambiguous.txt", b"did it start?")

    assert local.pump_ingest() == 1  # the message is done: re-sending could duplicate the execution
    (job,) = jobs(stack)
    assert job["status"] == "received" and "ReadTimeout" in job["error"]
    assert len(emulator.executions) == 1

    settle(local, clock)

    assert len(emulator.executions) == 1  # adopted, never re-sent
    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "completed"
    assert job["execution_id"] == next(iter(emulator.executions))
    assert "results/ambiguous.txt.json" in output_keys(stack)


def test_request_that_never_arrived_is_submitted_again_once(stack, wire, emulator, clock):
    wire(transport=LoseResponse(emulator.app, reach_server=False))
    local = LocalAws(stack)
    drop(stack, "lost.txt", b"never arrived")
    local.pump_ingest()
    assert emulator.executions == {}

    settle(local, clock)

    assert len(emulator.executions) == 1
    (job,) = jobs(stack)
    assert job["status"] == "delivered" and job["outcome"] == "completed"
    assert job["attempts"] == 2
