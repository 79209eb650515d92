"""PollerFunction: on a schedule, poll the in-flight jobs that are due, with bounded concurrency."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch import runtime, tracing

logger = Logger(service="vlmwatch-poller")
runtime.route_library_logs(logger)  # vlmwatch.* lines: JSON, with this handler's keys
metrics = Metrics(namespace="vlmwatch", service="poller")
tracer = tracing.tracer("vlmwatch-poller")  # a no-op unless the X-Ray SDK is in the layer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@runtime.reports_usage(metrics)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = runtime.tracker().run()
    for name in ("due", "polled", "finished", "timed_out", "errors"):
        metrics.add_metric(
            name=f"Poll{name.title().replace('_', '')}", unit=MetricUnit.Count, value=getattr(summary, name)
        )
    result = asdict(summary)
    result.pop("outcomes")
    logger.info("poll run", extra=result)
    return result
