"""CompleteFunction: job-table stream records for terminal transitions → documents and artifacts → delivered."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch import runtime, tracing

logger = Logger(service="vlmwatch-complete")
runtime.route_library_logs(logger)  # vlmwatch.* lines: JSON, with this handler's keys
metrics = Metrics(namespace="vlmwatch", service="complete")
tracer = tracing.tracer("vlmwatch-complete")  # a no-op unless the X-Ray SDK is in the layer
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@tracer.capture_method
def handle_record(record: DynamoDBRecord) -> None:
    job_id = record.dynamodb.keys["job_id"]  # type: ignore[union-attr]
    logger.append_keys(job_id=job_id)
    delivery = runtime.deliverer().deliver(job_id)
    if delivery is not None:
        metrics.add_metric(name="Delivered", unit=MetricUnit.Count, value=1)
        # JobsCompleted / JobsFailed / JobsTimedOut, and received -> document latency, for the dashboard.
        metrics.add_metric(name=f"Jobs{delivery.outcome.title().replace('_', '')}", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="EndToEndSeconds", unit=MetricUnit.Seconds, value=delivery.seconds)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@runtime.reports_usage(metrics)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
