"""The local Step Functions (vlmwatch_local.cloud.stepfunctions): the ASL it runs behaves as AWS's does
for what the poller state machine uses, and anything else is refused rather than run differently."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from vlmwatch_local.cloud.stepfunctions import LocalStepFunctions

ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:test"
FN = "arn:aws:lambda:us-east-1:123456789012:function:fn"
RETRY = {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 2, "BackoffRate": 2}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def machine(definition: dict[str, Any], invoke) -> tuple[LocalStepFunctions, Clock]:
    clock = Clock()
    return LocalStepFunctions(definition, ARN, {FN: "fn"}, invoke, clock), clock


def start(sfn: LocalStepFunctions, name: str = "x", **data: Any) -> None:
    sfn.start_execution(stateMachineArn=ARN, name=name, input=json.dumps(data))


def test_a_failing_task_is_retried_with_backoff_then_caught_and_every_retry_is_a_transition():
    calls: list[float] = []
    loop = {
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": FN, "Payload": {"id.$": "$.id"}},
                "Retry": [RETRY],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Failed"}],
                "End": True,
            },
            "Failed": {"Type": "Fail", "Error": "Gave up"},
        },
    }

    def invoke(function: str, payload: dict[str, Any]) -> Any:
        calls.append(clock.now)
        raise RuntimeError(f"boom {payload['id']}")

    sfn, clock = machine(loop, invoke)
    start(sfn, id="a")
    sfn.run_due()
    clock.now += 2
    sfn.run_due()
    clock.now += 3  # the second retry waits 2 x 2 s: not yet
    sfn.run_due()
    assert len(calls) == 2
    clock.now += 1
    sfn.run_due()
    execution = sfn.executions["x"]
    assert calls == [1000.0, 1002.0, 1006.0]
    assert execution.status == "FAILED" and execution.error == "Gave up"
    assert execution.data["failure"] == {"Error": "RuntimeError", "Cause": "boom a"}
    assert execution.states == ["Work", "Failed"] and sfn.transitions == 2 + 2  # two states, two retries


def test_a_task_token_is_released_once_or_times_out_into_the_catch():
    tokens: list[str] = []
    waiting = {
        "StartAt": "Await",
        "States": {
            "Await": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": FN, "Payload": {"token.$": "$$.Task.Token"}},
                "TimeoutSecondsPath": "$.wait",
                "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": None, "Next": "TimedOut"}],
                "End": True,
            },
            "TimedOut": {"Type": "Succeed"},
        },
    }
    sfn, clock = machine(waiting, lambda fn, payload: tokens.append(payload["token"]))
    start(sfn, "released", wait=60)
    start(sfn, "silent", wait=60)
    sfn.run_due()
    assert len(tokens) == 2 and sfn.running == 2

    sfn.send_task_success(taskToken=tokens[0], output=json.dumps({"done": True}))
    sfn.run_due()
    assert sfn.executions["released"].status == "SUCCEEDED"
    assert sfn.executions["released"].output == {"done": True}
    with pytest.raises(ClientError) as again:  # a token works once
        sfn.send_task_success(taskToken=tokens[0], output="{}")
    assert again.value.response["Error"]["Code"] == "TaskTimedOut"

    clock.now += 60
    sfn.run_due()
    assert sfn.executions["silent"].states == ["Await", "TimedOut"]
    with pytest.raises(ClientError) as late:  # and not after its timeout
        sfn.send_task_success(taskToken=tokens[1], output="{}")
    assert late.value.response["Error"]["Code"] == "TaskTimedOut"


def test_names_are_unique_and_what_it_cannot_run_is_refused():
    sfn, _ = machine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}, lambda fn, p: None)
    start(sfn)
    with pytest.raises(ClientError) as taken:
        start(sfn)
    assert taken.value.response["Error"]["Code"] == "ExecutionAlreadyExists"
    with pytest.raises(NotImplementedError, match="Pass"):
        sfn.run_due()
