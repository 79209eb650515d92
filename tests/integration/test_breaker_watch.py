"""The chaos summary's breaker rows: what was sent while the breaker was open, and how long the jobs that
waited on it took once the fault was over. The breaker is the real adapter on the job table (moto), the
requests go to the emulator's app, and the clock is virtual: every edge is where the test put it."""

from __future__ import annotations

import boto3
import httpx

from vlmwatch.adapters.breaker import CircuitBreaker, Reason
from vlmwatch_local.harness.breaker_watch import BreakerWatch
from vlmwatch_local.harness.invariants import ChaosReport


def test_requests_while_open_and_the_waiting_jobs_recovery(stack, emulator, clock):
    breaker = CircuitBreaker(boto3.client("dynamodb", region_name=stack.region), stack.table, clock=clock)
    watch = BreakerWatch(
        CircuitBreaker(boto3.client("dynamodb", region_name=stack.region), stack.table, clock=clock), clock
    )
    watch.log_requests(emulator.app)
    vlmrun = httpx.Client(transport=httpx.WSGITransport(app=emulator.app), base_url="http://emulator.localhost/v1/")
    t0 = clock()

    vlmrun.get("agent/executions/e-before")  # closed: not counted
    watch.sample([])
    clock.advance(10)
    breaker.open(Reason.CREDITS, "HTTP 402: Insufficient credits")
    clock.advance(1)
    vlmrun.post("agent/execute", json={"name": "a:v1"})  # the probe, and two polls in flight when it opened
    vlmrun.get("agent/executions/e-1")
    vlmrun.get("agent/executions/e-2")
    vlmrun.get("http://emulator.localhost/_emulator/stats")  # not the API
    waiting = f"waiting: the VLM Run account is out of credits (circuit breaker open since {int(t0) + 10}): 402"
    watch.sample([{"job_id": "a", "last_poll_error": waiting}, {"job_id": "b", "last_poll_error": "HTTP 429"}])
    clock.advance(19)
    breaker.succeeded(started=True)  # a submit went through: credits are back, it closes at t0 + 30
    clock.advance(3)
    watch.sample([{"job_id": "a", "last_poll_error": None}])
    vlmrun.get("agent/executions/e-after")  # closed again: not counted

    assert [(e.start - t0, None if e.end is None else e.end - t0, e.reasons) for e in watch.episodes] == [
        (10, 30, {"credits"})
    ]
    assert watch.while_open() == {"credits": ({"submits": 1, "polls": 2}, 20)}
    assert (watch.opened, watch.probes) == (1, 0)  # the test sent its "probe" without asking the breaker
    window = {"kind": "no_credits", "start": t0 + 8, "end": t0 + 25, "seconds": 17}
    rows = {"a": {"delivered_at": t0 + 60}, "b": {"delivered_at": t0 + 90}}  # b never waited on the breaker
    outage = {"kind": "outage", "start": t0 + 1, "end": t0 + 2}  # over before the breaker opened
    revoked = {"kind": "revoked_key", "start": t0 + 12, "end": t0 + 20}  # inside the credits episode
    recovery = watch.recovery([window, outage, revoked], rows)
    assert recovery["no_credits"] == {
        "episodes": 1,
        "reasons": ["credits"],
        "jobs": 1,
        "closed": 5,
        "last_document": 35,
        "median_document": 35,
        "undelivered": 0,
    }
    assert recovery["outage"]["episodes"] == 0  # the breaker never opened for that one
    # A fault inside another's episode: its jobs waited on the breaker all the same, and the row says why.
    assert recovery["revoked_key"]["reasons"] == ["credits"] and recovery["revoked_key"]["last_document"] == 40

    report = ChaosReport(
        while_breaker_open=watch.while_open(), breaker_episodes=watch.opened, breaker_recovery=recovery
    )
    table = report.table()
    assert "| requests sent while the breaker was open" in table and "credits 3 (polls 2, submits 1)" in table
    assert "no_credits +35 s (half by +35 s) (1 jobs waited)" in table and "outage: breaker not opened for it" in table
    assert "| 1 times, 0 probes (credits 20 s) |" in table
    assert "no_credits +5 s" in table  # fault end -> breaker closed
    assert "revoked_key (breaker open for credits) +40 s (half by +40 s) (1 jobs waited)" in table
