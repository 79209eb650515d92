"""PollOnceFunction (stepfunctions mode): one iteration of a job's state machine — poll once, say what next.

Input ``{"job_id"}`` → ``{"job_id", "status", "done", "wait_seconds", "await_callback"}``. With
``{"job_id", "task_token"}`` (AwaitCallback, webhooks on) it keeps the token on the job's row, for the job's
leaving flight to release. With ``{"job_id", "failure"}`` (the state machine's Catch) it records why polling
broke; the job stays in flight for the sweeper.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch.runtime import wiring
from vlmwatch.runtime.handler_kit import HandlerKit

kit = HandlerKit("pollonce")


@kit.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job_id = str(event["job_id"])
    kit.logger.append_keys(job_id=job_id)
    failure = event.get("failure")
    if "task_token" in event:
        wiring.step_loop().await_callback(job_id, str(event["task_token"]))
        kit.count("AwaitingCallback")
        return {"job_id": job_id}
    if failure is not None:
        result = wiring.step_loop().record_failure(job_id, str(failure.get("Error")), str(failure.get("Cause")))
        kit.count("PollLoopFailed")
    else:
        try:
            result = wiring.step_loop().step(job_id)
        except Exception:
            kit.count("PollOnceErrors")
            raise  # the state machine retries, then its Catch records the failure on the job
        kit.count("Polled")
    return asdict(result)
