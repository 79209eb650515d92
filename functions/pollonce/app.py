"""PollOnceFunction (stepfunctions mode): one iteration of a job's state machine — poll once, say what next.

Input ``{"job_id"}`` → ``{"job_id", "status", "terminal", "wait_seconds"}``. With ``{"job_id", "failure"}``
(the state machine's Catch) it records why polling broke and fails the job.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch import runtime, tracing

logger = Logger(service="vlmwatch-pollonce")
runtime.route_library_logs(logger)  # vlmwatch.* lines: JSON, with this handler's keys
metrics = Metrics(namespace="vlmwatch", service="pollonce")
tracer = tracing.tracer("vlmwatch-pollonce")  # a no-op unless the X-Ray SDK is in the layer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@runtime.reports_usage(metrics)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job_id = str(event["job_id"])
    logger.append_keys(job_id=job_id)
    failure = event.get("failure")
    if failure is not None:
        result = runtime.tracker().record_failure(job_id, str(failure.get("Error")), str(failure.get("Cause")))
        metrics.add_metric(name="PollLoopFailed", unit=MetricUnit.Count, value=1)
    else:
        try:
            result = runtime.tracker().step(job_id)
        except Exception:
            metrics.add_metric(name="PollOnceErrors", unit=MetricUnit.Count, value=1)
            raise  # the state machine retries, then its Catch records the failure on the job
        metrics.add_metric(name="Polled", unit=MetricUnit.Count, value=1)
    return asdict(result)
