"""stepfunctions mode on the local stack: the template's state machine run by the local Step Functions
(:mod:`vlmwatch_local.cloud.stepfunctions`) with the real handlers, as ``make demo --polling-mode
stepfunctions`` runs it."""

from __future__ import annotations

import pytest

from helpers import error_key, result_key
from vlmwatch_local.cloud.runner import SAMPLES
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig

pytestmark = pytest.mark.e2e
FILES = ("invoice.pdf", "photo.png", "notes.txt", "broken.pdf")


def run(*, webhook: bool, callback_drop_rate: float = 0.0, cap: int = 30) -> tuple[dict, dict, set[str], LocalStack]:
    config = EmulatorConfig(step_seconds=0.2, callback_drop_rate=callback_drop_rate)
    env = {"POLL_BASE_SECONDS": "1", "POLL_CAP_SECONDS": str(cap)}
    local = LocalStack(
        emulator_config=config,
        env=env,
        webhook=webhook,
        polling_mode="stepfunctions",
        moto="in-process",
        parameters={"AgentName": "doc-extractor:v1"},
    )
    with local:
        for name in FILES:
            local.drop(f"sfn/{name}", (SAMPLES / name).read_bytes())
        assert local.run_until_settled(expected=len(FILES), timeout=60)
        machines = local.machines
        assert machines is not None
        for _ in range(200):  # a released execution ends at once; a polling one at its next PollOnce
            if not machines.running:
                break
            local.aws.step()
        jobs = {j["key"]: j for j in local.jobs()}
        outputs = set(local.output_keys())
        executions = {e.name.split("-")[0]: e for e in machines.executions.values()}
    return jobs, executions, outputs, local


def assert_every_file_delivered(jobs: dict, outputs: set[str]) -> None:
    assert {k: j["status"] for k, j in jobs.items()} == {f"sfn/{n}": "delivered" for n in FILES}
    assert jobs["sfn/broken.pdf"]["outcome"] == "failed" and error_key("sfn/broken.pdf") in outputs
    assert {result_key(f"sfn/{n}") for n in FILES if n != "broken.pdf"} <= outputs


def test_with_webhooks_each_execution_is_one_state_released_by_its_job_leaving_flight():
    jobs, executions, outputs, local = run(webhook=True)
    assert_every_file_delivered(jobs, outputs)
    assert len(executions) == len(FILES)  # one per job
    assert all(e.status == "SUCCEEDED" and e.states == ["AwaitCallback"] for e in executions.values())
    assert all(e.output["done"] is True for e in executions.values())
    assert local.machines is not None and local.machines.transitions == len(FILES)
    assert all(int(j.get("poll_count", 0)) == 0 for j in jobs.values())  # no poll: the callbacks did it
    assert all("task_token" not in j for j in jobs.values())  # the token leaves the row with the job


def test_with_webhooks_a_callback_that_never_comes_costs_a_poll_at_the_tokens_timeout_not_the_job():
    jobs, executions, outputs, _ = run(webhook=True, callback_drop_rate=1.0, cap=1)
    assert_every_file_delivered(jobs, outputs)
    for execution in executions.values():
        assert execution.status == "SUCCEEDED"
        assert execution.states[:3] == ["AwaitCallback", "PollOnce", "Finished?"]
        # Polled on the token's timeout, then waiting on a token again until the job ends.
        assert "WaitForNextPoll" not in execution.states


def test_without_webhooks_the_loop_polls_on_the_jobs_backoff():
    jobs, executions, outputs, _ = run(webhook=False, cap=1)
    assert_every_file_delivered(jobs, outputs)
    for execution in executions.values():
        assert execution.status == "SUCCEEDED"
        assert execution.states[:3] == ["WaitForNextPoll", "PollOnce", "Finished?"] and execution.states[-1] == "Done"
        assert "AwaitCallback" not in execution.states


def test_a_token_handed_over_after_the_job_left_flight_is_released_at_once():
    """The callback came before the execution's first state ran: PollOnce finds the job out of flight and
    ends the wait itself, so the execution is still one state and nothing waits for a timeout."""
    local = LocalStack(
        emulator_config=EmulatorConfig(step_seconds=0.1),
        env={"POLL_BASE_SECONDS": "1", "POLL_CAP_SECONDS": "600"},
        webhook=True,
        polling_mode="stepfunctions",
        moto="in-process",
        parameters={"AgentName": "doc-extractor:v1"},
    )
    with local:
        local.drop("sfn/late.txt", b"late token")
        assert local.run_until_settled(expected=1, timeout=30)
        machines = local.machines
        assert machines is not None
        (job,) = local.jobs()
        # A second execution for the same job, as if the first state had been slow to run.
        machines.start_execution(
            stateMachineArn=local.stack.state_machine_arn,
            name=f"{job['job_id']}-late",
            input=f'{{"job_id": "{job["job_id"]}", "wait_seconds": 600}}',
        )
        machines.run_due()
        machines.run_due()
        late = machines.executions[f"{job['job_id']}-late"]
    assert late.status == "SUCCEEDED" and late.states == ["AwaitCallback"]
    assert late.output == {"job_id": job["job_id"], "status": "delivered", "done": True}
