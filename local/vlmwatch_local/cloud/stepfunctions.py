"""Step Functions for the local stack: the template's poller state machine, run here on the stack's clock.

moto records a started execution but runs it only with its ASL interpreter in real time (Wait states
sleep, a Lambda task needs moto's Lambda): fine for one integration test, not for a demo, a chaos run of
1,000 files or an hour of virtual time. So the local stack plays Step Functions itself, as the emulator
plays VLM Run: :class:`LocalStepFunctions` is the handlers' Step Functions client (``wiring.use(
stepfunctions=...)``), and the loops call :meth:`LocalStepFunctions.run_due` each turn.

It runs the definition as deployed (``statemachine/poller.asl.json`` with the template's substitutions,
from :func:`.provision.provision`), and only the parts of the language that definition uses: Wait
(``SecondsPath``), Task (``lambda:invoke`` and ``lambda:invoke.waitForTaskToken`` with ``Parameters``,
``ResultSelector``, ``ResultPath``, ``TimeoutSecondsPath``, ``Retry``, ``Catch``), Choice
(``BooleanEquals``), Succeed and Fail. Anything else raises, so a definition that outgrows this fails
the tests instead of running differently here. AWS's behaviour kept: execution names are unique
(``ExecutionAlreadyExists``), a task token works once and not after its timeout (``TaskTimedOut``), a
Lambda error is named by its type, each retry is a state transition.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

Invoke = Callable[[str, dict[str, Any]], Any]
_CALLBACK_SUFFIX = ".waitForTaskToken"  # the callback integration pattern


class _TaskError(Exception):
    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(error)
        self.error, self.cause = error, cause


def _client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class Execution:
    """One execution: where it is, what its data is, and what it waits for."""

    name: str
    arn: str
    state: str
    data: Any
    status: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED
    wake_at: float | None = None  # a Wait's end, a retry's interval, or a token's timeout
    token: str | None = None  # the task token it waits on (waitForTaskToken)
    released: str | None = None  # the output a SendTaskSuccess brought, not yet taken
    retries: dict[str, int] = field(default_factory=dict)  # per retrier, since the state was entered
    waiting: bool = False  # a Wait state's time has been scheduled
    states: list[str] = field(default_factory=list)  # every state entered, in order
    error: str | None = None
    output: Any = None


class LocalStepFunctions:
    """The poller state machine's executions, and the client calls the handlers make.

    Args:
        definition: the ASL, substitutions resolved.
        arn: the state machine's ARN (what ``STATE_MACHINE_ARN`` says).
        functions: function ARN -> the local handler's name (``pollonce``).
        invoke: calls a handler with an event and returns its result (:meth:`LocalAws.invoke`).
        clock: epoch seconds (the stack's clock: virtual in perf, the wall clock elsewhere).
    """

    def __init__(
        self,
        definition: dict[str, Any],
        arn: str,
        functions: dict[str, str],
        invoke: Invoke,
        clock: Callable[[], float],
    ) -> None:
        self._definition = definition
        self._arn = arn
        self._functions = functions
        self._invoke = invoke
        self._clock = clock
        self._lock = threading.RLock()
        self._due: list[tuple[float, int, str]] = []  # (when, tie-breaker, execution name)
        self._seq = itertools.count()
        self._tokens: dict[str, str] = {}  # live task token -> execution name
        self.executions: dict[str, Execution] = {}
        self.transitions = 0  # state transitions, as Step Functions bills them (retries included)

    # -- the Step Functions client the handlers call ---------------------------------------------------

    def start_execution(self, *, stateMachineArn: str, name: str, input: str = "{}") -> dict[str, Any]:
        if stateMachineArn != self._arn:
            raise _client_error(
                "StateMachineDoesNotExist", f"State Machine Does Not Exist: '{stateMachineArn}'", "StartExecution"
            )
        with self._lock:
            if name in self.executions:
                raise _client_error("ExecutionAlreadyExists", f"Execution Already Exists: '{name}'", "StartExecution")
            arn = self._arn.replace(":stateMachine:", ":execution:") + f":{name}"
            execution = Execution(name, arn, self._definition["StartAt"], json.loads(input))
            self.executions[name] = execution
            self._enter(execution, execution.state)
            self._schedule(execution, self._clock())
        return {"executionArn": arn, "startDate": self._clock()}

    def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
        with self._lock:
            name = self._tokens.pop(taskToken, None)
            if name is None:
                # AWS: a token whose task timed out, completed or stopped.
                raise _client_error("TaskTimedOut", "Task Timed Out", "SendTaskSuccess")
            execution = self.executions[name]
            execution.token, execution.released = None, output
            self._schedule(execution, self._clock())
        return {}

    # -- the loop -------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(e.status == "RUNNING" for e in self.executions.values())

    def run_due(self) -> int:
        """Move every execution whose time has come as far as it goes; returns how many moved."""
        moved = 0
        with self._lock:
            now = self._clock()
            while self._due and self._due[0][0] <= now:
                when, _, name = heapq.heappop(self._due)
                execution = self.executions[name]
                if execution.status != "RUNNING" or execution.wake_at != when:
                    continue  # stale: the execution moved on since this was scheduled
                execution.wake_at = None
                self._run(execution)
                moved += 1
        return moved

    def _schedule(self, execution: Execution, when: float) -> None:
        execution.wake_at = when
        heapq.heappush(self._due, (when, next(self._seq), execution.name))

    def _enter(self, execution: Execution, state: str) -> None:
        execution.state = state
        execution.states.append(state)
        execution.retries = {}  # as in AWS: each entry into a state has its retriers' full attempts
        self.transitions += 1

    def _run(self, execution: Execution) -> None:
        """Run states until the execution waits (a Wait, a retry interval, a token) or ends."""
        while execution.status == "RUNNING":
            spec = self._definition["States"][execution.state]
            kind = spec["Type"]
            if kind == "Wait":
                if not execution.waiting:  # just entered: wait; woken: go on
                    execution.waiting = True
                    seconds = spec["Seconds"] if "Seconds" in spec else _path(execution.data, spec["SecondsPath"])
                    self._schedule(execution, self._clock() + float(seconds))
                    return
                execution.waiting = False
                self._next(execution, spec, execution.data)
            elif kind == "Task":
                if not self._task(execution, spec):
                    return
            elif kind == "Choice":
                self._enter(execution, _choose(spec, execution.data))
            elif kind == "Succeed":
                execution.status, execution.output = "SUCCEEDED", execution.data
            elif kind == "Fail":
                execution.status, execution.error = "FAILED", spec.get("Error")
            else:
                raise NotImplementedError(f"the local Step Functions does not run {kind} states")

    def _task(self, execution: Execution, spec: dict[str, Any]) -> bool:
        """Run (or resume) a Task state; False when the execution now waits."""
        resource = spec["Resource"]
        if not resource.startswith("arn:aws:states:::lambda:invoke"):
            raise NotImplementedError(f"the local Step Functions does not run {resource}")
        callback = resource.endswith(_CALLBACK_SUFFIX)
        if execution.released is not None:  # a token's success: the task's result
            result, execution.released = json.loads(execution.released), None
            self._next(execution, spec, _result(spec, execution.data, result))
            return True
        if callback and execution.token is not None:  # woken by the token's timeout
            self._tokens.pop(execution.token, None)
            execution.token = None
            return self._failed(execution, spec, _TaskError("States.Timeout", "the task token's timeout passed"))
        token = f"local-token-{uuid.uuid4().hex}" if callback else None
        params = _parameters(spec.get("Parameters", {}), execution.data, token)
        function = self._functions.get(str(params.get("FunctionName")))
        if function is None:
            raise NotImplementedError(f"no local handler for {params.get('FunctionName')}")
        if token is not None:
            # Live before the invocation: the function may release it itself (a job already out of flight).
            execution.token = token
            self._tokens[token] = execution.name
        try:
            payload = self._invoke(function, params.get("Payload", {}))
        except BaseException as exc:
            if not isinstance(exc, Exception) and not getattr(exc, "simulated", False):
                raise
            if token is not None:
                self._tokens.pop(token, None)
                execution.token = None
            # As Lambda reports it: an unhandled error is named by its type; a function that died is Unknown.
            name = type(exc).__name__ if isinstance(exc, Exception) else "Lambda.Unknown"
            return self._failed(execution, spec, _TaskError(name, str(exc)))
        if token is None:
            self._next(execution, spec, _result(spec, execution.data, {"Payload": payload, "StatusCode": 200}))
            return True
        if execution.released is not None:  # released during the invocation
            return self._task(execution, spec)
        timeout = (
            spec["TimeoutSeconds"] if "TimeoutSeconds" in spec else _path(execution.data, spec["TimeoutSecondsPath"])
        )
        self._schedule(execution, self._clock() + float(timeout))
        return False

    def _failed(self, execution: Execution, spec: dict[str, Any], error: _TaskError) -> bool:
        """Retry (the execution waits the interval), catch (it goes on), or fail the execution."""
        for retrier in spec.get("Retry", []):
            if _matches(retrier["ErrorEquals"], error.error):
                key = ",".join(retrier["ErrorEquals"])
                attempt = execution.retries.get(key, 0)
                if attempt < retrier.get("MaxAttempts", 3):
                    execution.retries[key] = attempt + 1
                    self.transitions += 1  # every retry is billed as a transition
                    delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** attempt
                    self._schedule(execution, self._clock() + min(delay, retrier.get("MaxDelaySeconds", delay)))
                    return False
                break  # the first matching retrier decides; exhausted, it falls to the catchers
        for catcher in spec.get("Catch", []):
            if _matches(catcher["ErrorEquals"], error.error):
                failure = {"Error": error.error, "Cause": error.cause}
                data = _put(execution.data, catcher.get("ResultPath", "$"), failure)
                self._enter(execution, catcher["Next"])
                execution.data = data
                return True
        execution.status, execution.error = "FAILED", error.error
        return False

    def _next(self, execution: Execution, spec: dict[str, Any], data: Any) -> None:
        execution.data = data
        if spec.get("End"):
            execution.status, execution.output = "SUCCEEDED", data
        else:
            self._enter(execution, spec["Next"])


def _path(data: Any, path: str) -> Any:
    """A reference path (``$``, ``$.a.b``) into ``data``."""
    if path == "$":
        return data
    value = data
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def _put(data: Any, path: str | None, value: Any) -> Any:
    """ResultPath: ``None`` keeps the input, ``$`` replaces it, ``$.x`` sets one field of a copy."""
    if path is None:
        return data
    if path == "$":
        return value
    out = dict(data)
    out[path.removeprefix("$.")] = value
    return out


def _parameters(template: Any, data: Any, token: str | None) -> Any:
    """Parameters / ResultSelector: ``key.$`` values are paths (``$$.Task.Token`` is the task's token)."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = token if value == "$$.Task.Token" else _path(data, value)
            else:
                out[key] = _parameters(value, data, token)
        return out
    return template


def _result(spec: dict[str, Any], data: Any, result: Any) -> Any:
    if "ResultSelector" in spec:
        result = _parameters(spec["ResultSelector"], result, None)
    return _put(data, spec.get("ResultPath", "$"), result)


def _matches(names: list[str], error: str) -> bool:
    if error in names or "States.ALL" in names:
        return error != "States.Runtime"
    return "States.TaskFailed" in names and error != "States.Timeout"


def _choose(spec: dict[str, Any], data: Any) -> str:
    for rule in spec["Choices"]:
        if set(rule) - {"Variable", "BooleanEquals", "Next"}:
            raise NotImplementedError(f"the local Step Functions does not evaluate {sorted(rule)}")
        try:
            value = _path(data, rule["Variable"])
        except (KeyError, TypeError):
            continue
        if value is rule["BooleanEquals"]:
            return str(rule["Next"])
    if "Default" not in spec:
        raise _TaskError("States.NoChoiceMatched")
    return str(spec["Default"])
