"""WebhookFunction (behind a Lambda function URL): VLM Run callbacks → verified → re-fetched → job updated."""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch import runtime, tracing
from vlmwatch.webhooks import SIGNATURE_HEADER

logger = Logger(service="vlmwatch-webhook")
runtime.route_library_logs(logger)  # vlmwatch.* lines: JSON, with this handler's keys
metrics = Metrics(namespace="vlmwatch", service="webhook")
tracer = tracing.tracer("vlmwatch-webhook")  # a no-op unless the X-Ray SDK is in the layer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
@runtime.reports_usage(metrics)
def lambda_handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict[str, Any]:
    if event.request_context.http.method != "POST":
        return _response(405, {"message": "Method not allowed"})
    # The signature covers the raw bytes: never re-serialise the body before checking it.
    raw = base64.b64decode(event.body or "") if event.is_base64_encoded else (event.body or "").encode()
    # event.headers is case-insensitive.
    # The query carries the job id, attempt and our token that we put in the callback URL.
    query = dict(event.query_string_parameters or {})
    status, body = runtime.webhook_receiver().handle(raw, event.headers.get(SIGNATURE_HEADER), query)
    metrics.add_metric(name=f"Webhook{status}", unit=MetricUnit.Count, value=1)
    return _response(status, body)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
