"""What CloudWatch is told about the VLM Run account: the breaker's gauges are what the alarms watch, the
dashboard shows the alarms, and each delivery says what it cost.

The handlers run for real and print their EMF records to stdout, as in Lambda; the template is the one
deployed, so a renamed metric or dimension on either side fails here, not in an account at 3 a.m.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import drop, jobs, settle
from vlmwatch.adapters.breaker import Reason
from vlmwatch.core.errors import VlmRunAuthError, VlmRunCreditsError, VlmRunUnavailableError
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.provision import load_template

ERRORS = {
    Reason.CREDITS: VlmRunCreditsError("out of credits (HTTP 402): Insufficient credits", status_code=402),
    Reason.CREDENTIALS: VlmRunAuthError("VLM Run refused our credentials (HTTP 401): Invalid API key", status_code=401),
}
ALARM_FOR = {
    Reason.UNAVAILABLE: "VlmRunUnavailableAlarm",
    Reason.CREDITS: "VlmRunOutOfCreditsAlarm",
    Reason.CREDENTIALS: "VlmRunCredentialsAlarm",
    Reason.BUDGET: "VlmRunBudgetSpentAlarm",
}


def emf_records(stdout: str) -> list[dict[str, Any]]:
    """Every EMF record printed: one JSON object a line with an ``_aws`` block."""
    records = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def metric(records: list[dict[str, Any]], name: str) -> tuple[str, dict[str, str], Any]:
    """(namespace, dimensions, value) of the one record carrying ``name``."""
    (record,) = [
        r for r in records if any(m["Name"] == name for d in r["_aws"]["CloudWatchMetrics"] for m in d["Metrics"])
    ]
    (directive,) = [d for d in record["_aws"]["CloudWatchMetrics"] if any(m["Name"] == name for m in d["Metrics"])]
    (dimension_names,) = directive["Dimensions"]
    value = record[name]
    return (
        directive["Namespace"],
        {k: record[k] for k in dimension_names},
        max(value) if isinstance(value, list) else value,
    )


def open_for(reason: Reason, wire) -> None:
    """Open the breaker the way each reason opens it in a deployment."""
    if reason == Reason.BUDGET:
        wire(MONTHLY_CREDIT_BUDGET="1")  # without a budget, the poller closes a budget episode at once
        wiring.ledger().record(1)  # the month's recorded credits reach it
    elif reason == Reason.UNAVAILABLE:  # 5xx in a row across calls, as many as it takes
        for _ in range(wiring.settings().breaker_failures):
            wiring.breaker().failed(VlmRunUnavailableError("HTTP 503: Service Unavailable", status_code=503))
    else:
        wiring.breaker().failed(ERRORS[reason])
    state = wiring.breaker().state(fresh=True)
    assert state.open and state.reason == reason


@pytest.mark.parametrize("reason", sorted(ALARM_FOR, key=str))
def test_the_poller_raises_the_gauge_the_reasons_alarm_watches(reason, stack, local, wire, capsys):
    open_for(reason, wire)
    capsys.readouterr()
    local.run_poller()
    records = emf_records(capsys.readouterr().out)

    alarm = load_template()["Resources"][ALARM_FOR[reason]]["Properties"]
    namespace, dimensions, value = metric(records, alarm["MetricName"])
    assert value == 1  # the alarm fires: Maximum >= 1
    assert namespace == alarm["Namespace"]
    assert dimensions == {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    # The other reasons' alarms stay quiet.
    for other, name in ALARM_FOR.items():
        if other != reason:
            other_metric = load_template()["Resources"][name]["Properties"]["MetricName"]
            assert metric(records, other_metric)[2] == 0


def test_a_closed_breaker_reports_every_gauge_at_zero(stack, local, capsys):
    capsys.readouterr()
    local.run_poller()
    records = emf_records(capsys.readouterr().out)
    for name in ALARM_FOR.values():
        alarm = load_template()["Resources"][name]["Properties"]
        assert metric(records, alarm["MetricName"])[2] == 0


def test_the_dashboard_shows_the_four_account_alarms_and_their_gauges():
    template = load_template()
    body, names = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for alarm in ALARM_FOR.values():
        assert f"${{{alarm}Arn}}" in body  # in the dashboard's alarm widget...
        assert names[f"{alarm}Arn"] == {"Fn::GetAtt": [alarm, "Arn"]}  # ...bound to that very alarm
        assert f'"{template["Resources"][alarm]["Properties"]["MetricName"]}"' in body  # and its gauge graphed


def test_a_delivery_reports_its_credits_per_rule_and_agent(stack, local, wire, clock, capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "vlmwatch-complete")  # as the template sets it in Lambda
    wire()  # the default rule, the deployment's default agent
    drop(stack, "costs/one.txt", b"one element, one credit")
    capsys.readouterr()
    settle(local, clock)
    (row,) = jobs(stack)
    assert row["outcome"] == "completed"
    namespace, dimensions, value = metric(emf_records(capsys.readouterr().out), "CreditsUsed")
    assert namespace == "vlmwatch" and value == row["credits_used"] == 1
    # README: dimension `service` = the function, plus the rule and the agent that ran.
    assert dimensions == {"service": "complete", "rule": "default", "agent": "doc-extractor:v1"}
