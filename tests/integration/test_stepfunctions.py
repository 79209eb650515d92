"""The poller state machine (statemachine/poller.asl.json) run by moto's ASL interpreter, with its Lambda
task routed to the real PollOnce handler in-process."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from helpers import PDF_BYTES, drop, error_key, jobs, read_json, result_key
from vlmwatch.flows.steploop import StepLoop
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LambdaContext, LocalAws, load_handler
from vlmwatch_local.cloud.provision import deployed_state_machine

ASL = Path(__file__).resolve().parents[2] / "statemachine" / "poller.asl.json"
pytestmark = pytest.mark.e2e


@pytest.fixture
def aws():
    # Overrides the suite's plain mock: this one executes state machines.
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        yield


@pytest.fixture
def clock():
    return time.time  # Wait states sleep in real time: the job store must agree with them


@pytest.fixture
def state_machine(stack, monkeypatch) -> str:
    """PollOnceFunction and the state machine as the template wires them (no webhooks: the polling loop)."""
    return create_state_machine(monkeypatch, webhook=False)


def create_state_machine(monkeypatch, *, webhook: bool) -> str:
    pollonce = load_handler("pollonce")

    def invoke_in_process(self, function_name, qualifier, body, headers, response_headers) -> bytes:
        event = json.loads(body) if body else {}
        try:
            result = pollonce.lambda_handler(event, LambdaContext(function_name="vlmwatch-pollonce"))
        except Exception as exc:  # reported as Lambda does: errorType becomes the state's error name
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(result).encode()

    # moto's Lambda without Docker echoes the payload: run the real handler in-process instead.
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke_in_process)
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="vlmwatch-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("app.py", "def lambda_handler(event, context): pass\n")
    function = boto3.client("lambda").create_function(
        FunctionName="vlmwatch-pollonce",
        Runtime="python3.12",
        Role=role,
        Handler="app.lambda_handler",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]
    parameters = {"PollingMode": "stepfunctions", "EnableWebhook": str(webhook).lower()}
    asl = deployed_state_machine(parameters, {"PollOnceFunction": function})
    # moto sleeps through Retry intervals in real time: the same state machine with quick retries.
    for state in ("PollOnce", "AwaitCallback"):
        for retry in asl["States"][state]["Retry"]:
            retry.update(IntervalSeconds=1, MaxAttempts=1, BackoffRate=1)
            retry.pop("MaxDelaySeconds", None)
            retry.pop("JitterStrategy", None)
    definition = json.dumps(asl)
    return boto3.client("stepfunctions").create_state_machine(
        name="vlmwatch-poller", definition=definition, roleArn=role
    )["stateMachineArn"]


def wait_for(sfn, arn: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = sfn.describe_execution(executionArn=arn)
        if description["status"] != "RUNNING":
            return description
        time.sleep(0.2)
    raise AssertionError(f"execution {arn} still running after {timeout}s")


def test_the_deployed_loop_retries_for_minutes_before_it_hands_a_job_to_the_sweeper():
    asl = json.loads(ASL.read_text())
    catch_all = next(r for r in asl["States"]["PollOnce"]["Retry"] if r["ErrorEquals"] == ["States.ALL"])
    assert catch_all["MaxAttempts"] >= 6  # a brief DynamoDB throttle is retried, not turned into a failure
    waits = [min(catch_all["MaxDelaySeconds"], catch_all["IntervalSeconds"] * 2**i) for i in range(6)]
    assert sum(waits) >= 60


def test_one_execution_per_job_completes_fails_times_out_and_hands_broken_loops_to_the_sweeper(
    stack, wire, emulator, state_machine, monkeypatch
):
    wire(STATE_MACHINE_ARN=state_machine, POLL_BASE_SECONDS="1", POLL_CAP_SECONDS="1", JOB_DEADLINE_SECONDS="4")
    crash_key = "crash.txt"
    real_step = StepLoop.step

    def step(self: StepLoop, job_id: str):
        job = wiring.job_store().get(job_id)
        if job is not None and job.key == crash_key:
            raise RuntimeError("disk on fire")  # a bug in the poll path: the Catch must record it
        return real_step(self, job_id)

    monkeypatch.setattr(StepLoop, "step", step)
    local = LocalAws(stack)
    drop(stack, "done.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "broken.pdf", b"%PDF-1.4 truncated", "application/pdf")
    drop(stack, "stuck-here.txt", b"never finishes")
    drop(stack, crash_key, b"boom")

    assert local.pump_ingest() == 4
    sfn = boto3.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=state_machine)["executions"]
    # Named by job id and submit time: a name stays taken for 90 days after its execution closes.
    by_job = {e["name"].split("-")[0]: e["executionArn"] for e in executions}
    names = {e["name"].split("-")[0]: e["name"] for e in executions}
    rows = {j["key"]: j for j in jobs(stack)}
    assert set(by_job) == {row["job_id"] for row in rows.values()}  # one execution per job
    assert names["" + rows["done.pdf"]["job_id"]] == f"{rows['done.pdf']['job_id']}-{rows['done.pdf']['submitted_at']}"

    # A second start for the same submission is rejected by Step Functions itself, and a redelivered
    # event does not add one either.
    with pytest.raises(ClientError) as info:
        sfn.start_execution(stateMachineArn=state_machine, name=names[rows["done.pdf"]["job_id"]], input="{}")
    assert info.value.response["Error"]["Code"] == "ExecutionAlreadyExists"

    results = {key: wait_for(sfn, by_job[row["job_id"]]) for key, row in rows.items()}
    local.pump_stream()
    rows = {j["key"]: j for j in jobs(stack)}

    assert results["done.pdf"]["status"] == "SUCCEEDED"
    assert json.loads(results["done.pdf"]["output"])["status"] == "completed"
    assert rows["done.pdf"]["outcome"] == "completed" and rows["done.pdf"]["status"] == "delivered"
    assert read_json(stack, result_key("done.pdf"))["response"]["file"]["pages"] == 1

    assert results["broken.pdf"]["status"] == "SUCCEEDED"
    assert rows["broken.pdf"]["outcome"] == "failed"
    assert "not a readable PDF" in read_json(stack, error_key("broken.pdf"))["error"]["message"]

    assert results["stuck-here.txt"]["status"] == "SUCCEEDED"
    assert rows["stuck-here.txt"]["outcome"] == "timed_out"
    assert "within 4 s" in read_json(stack, error_key("stuck-here.txt"))["error"]["message"]

    # The loop gave up, the job did not: it stays in flight with the reason, and the sweeper finishes it.
    assert results[crash_key]["status"] == "FAILED"
    assert results[crash_key]["error"] == "PollingFailed"
    assert rows[crash_key]["status"] == "submitted" and "outcome" not in rows[crash_key]
    assert "disk on fire" in rows[crash_key]["last_poll_error"]
    monkeypatch.setattr(StepLoop, "step", real_step)
    for _ in range(10):
        local.run_poller()
        local.pump_stream()
        if jobs(stack)[[j["key"] for j in jobs(stack)].index(crash_key)]["status"] == "delivered":
            break
        time.sleep(1)
    crashed = next(j for j in jobs(stack) if j["key"] == crash_key)
    assert crashed["status"] == "delivered" and crashed["outcome"] in ("completed", "timed_out")

    # Redelivering every event starts nothing new.
    for key in rows:
        drop_again = {
            "source": "aws.s3",
            "detail-type": "Object Created",
            "detail": {
                "bucket": {"name": stack.input_bucket},
                "object": {"key": key, "version-id": rows[key]["version_id"]},
            },
        }
        local.send_raw(drop_again)
    local.pump_ingest()
    assert len(sfn.list_executions(stateMachineArn=state_machine)["executions"]) == 4


def entered(sfn, execution_arn: str) -> list[str]:
    """The states an execution entered, in order (what Step Functions bills as transitions)."""
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def test_with_webhooks_an_execution_waits_on_its_token_and_a_callback_that_never_comes_costs_one_poll(
    stack, wire, emulator, monkeypatch
):
    """AwaitCallback as AWS's interpreter runs it: the job's leaving flight releases the execution (one
    state); a job whose callback never comes is polled when the token's timeout passes, and delivered."""
    machine = create_state_machine(monkeypatch, webhook=True)
    # Webhooks on (the first wait is the safety net, capped at 2 s here); no callback URL: no callback comes
    # unless the test plays it.
    wire(STATE_MACHINE_ARN=machine, WEBHOOK_ENABLED="true", POLL_BASE_SECONDS="1", POLL_CAP_SECONDS="2")
    local = LocalAws(stack)
    sfn = boto3.client("stepfunctions")
    drop(stack, "called-back.pdf", PDF_BYTES, "application/pdf")
    assert local.pump_ingest() == 1
    job = jobs(stack)[0]
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]

    # The execution's first state hands its token to PollOnce, which keeps it on the job's row.
    deadline = time.monotonic() + 10
    while "task_token" not in job and time.monotonic() < deadline:
        time.sleep(0.1)
        job = jobs(stack)[0]
    assert job["task_token"] and sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "RUNNING"

    # The callback: the webhook applies the execution's final status (played here by the tracker).
    tracker = wiring.tracker()
    while (current := wiring.job_store().get(job["job_id"])).status.value in ("submitted", "enqueued", "running"):
        tracker.poll_job(current)
    local.pump_stream()  # the stream's release, then delivery
    done = wait_for(sfn, execution["executionArn"], timeout=10)
    assert done["status"] == "SUCCEEDED" and json.loads(done["output"])["done"] is True
    assert entered(sfn, execution["executionArn"]) == ["AwaitCallback"]
    row = jobs(stack)[0]
    assert row["status"] == "delivered" and "task_token" not in row

    # No callback: the token's timeout (2 s) falls back to one poll, and the loop goes on until the job ends.
    drop(stack, "never-called-back.pdf", PDF_BYTES, "application/pdf")
    assert local.pump_ingest() == 1
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    silent = next(e for e in executions if e["name"] != execution["name"])
    result = wait_for(sfn, silent["executionArn"], timeout=40)
    local.pump_stream()
    states = entered(sfn, silent["executionArn"])
    assert result["status"] == "SUCCEEDED"
    assert states[:3] == ["AwaitCallback", "PollOnce", "Finished?"] and states[-1] == "Done"
    assert {j["key"]: j["status"] for j in jobs(stack)}["never-called-back.pdf"] == "delivered"
