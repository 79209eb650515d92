"""`vlmwatch service` says what the breaker is doing now: half-open only once this episode's probe went
out, ramping for the deployment's ramp (not a fixed minute)."""

from __future__ import annotations

from helpers import run_cli
from vlmwatch.adapters.breaker import Reason
from vlmwatch.runtime import wiring
from vlmwatch_cli import ops
from vlmwatch_cli.target import Target


def test_a_breaker_opened_again_is_open_until_its_own_probe_goes_out(stack, wire, clock):
    wire(BREAKER_PROBE_SECONDS="30")
    breaker = wiring.breaker()
    target = Target(table=stack.table)
    breaker.open(Reason.UNAVAILABLE, "HTTP 503")
    assert ops.service(target, now=int(clock())).state == "open"
    clock.advance(31)
    assert breaker.admit("start") is None  # this caller is the probe
    report = ops.service(target, now=int(clock()))
    assert (report.state, report.episode_probes, report.probes) == ("half-open", 1, 1)
    breaker.succeeded(started=True)

    clock.advance(600)
    breaker.open(Reason.UNAVAILABLE, "HTTP 503 again")  # a second episode: no probe of its own yet
    report = ops.service(target, now=int(clock()))
    assert (report.state, report.episode_probes, report.probes) == ("open", 0, 1)
    clock.advance(31)
    assert breaker.admit("poll") is None
    assert ops.service(target, now=int(clock())).state == "half-open"


def test_ramping_lasts_the_deployments_ramp(stack, wire, clock):
    wire(BREAKER_RAMP_SECONDS="300")
    breaker = wiring.breaker()
    target = Target(table=stack.table)
    breaker.open(Reason.CREDITS, "HTTP 402")
    clock.advance(31)
    assert breaker.admit("start") is None
    breaker.succeeded(started=True)  # closed by a function whose ramp is 300 s
    closed_at = int(clock())
    report = ops.service(target, now=closed_at + 120)  # a fixed minute would call this closed
    assert (report.state, report.ramp_until) == ("ramping", closed_at + 300)
    assert ops.service(target, now=closed_at + 300).state == "closed"

    wire(BREAKER_RAMP_SECONDS="10")
    breaker = wiring.breaker()
    breaker.open(Reason.UNAVAILABLE, "HTTP 503")
    clock.advance(31)
    assert breaker.admit("start") is None
    breaker.succeeded()
    closed_at = int(clock())
    assert ops.service(target, now=closed_at + 5).state == "ramping"
    assert ops.service(target, now=closed_at + 30).state == "closed"  # a fixed minute would say ramping


def test_a_resume_from_the_cli_ramps_for_the_deployments_setting(stack, wire, monkeypatch):
    wire()
    monkeypatch.setenv("BREAKER_RAMP_SECONDS", "90")
    assert run_cli(stack, "pause", "--reason", "maintenance")[0] == 0
    code, out = run_cli(stack, "resume")
    assert code == 0 and "ramping" in out.splitlines()[0]
    report = ops.service(Target(table=stack.table))
    assert report.state == "ramping" and report.ramp_until is not None
    assert ops.service(Target(table=stack.table), now=report.ramp_until - 1).state == "ramping"
    assert ops.service(Target(table=stack.table), now=report.ramp_until).state == "closed"
    state = wiring.breaker().state(fresh=True)
    assert state.ramp_seconds == 90 and report.ramp_until == state.ramp_from + 90
