"""CompleteFunction: job-table stream records for finished transitions → documents and artifacts → delivered."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch.adapters.jobstore import TASK_TOKEN_FIELD
from vlmwatch.runtime import wiring
from vlmwatch.runtime.handler_kit import HandlerKit

kit = HandlerKit("complete")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@kit.tracer.capture_method
def handle_record(record: DynamoDBRecord) -> None:
    change = record.dynamodb
    assert change is not None  # every stream record carries one
    job_id = change.keys["job_id"]
    kit.logger.append_keys(job_id=job_id)
    # stepfunctions + webhooks: the job just left flight, so its state machine stops waiting (one state a job).
    token = change.old_image.get(TASK_TOKEN_FIELD)
    if token and wiring.state_machine().release(job_id, str(token), str(change.new_image.get("status"))):
        kit.count("StateMachineReleased")
    delivery = wiring.deliverer().deliver(job_id)
    if delivery is not None:
        kit.count("Delivered")
        # JobsCompleted / JobsFailed / JobsTimedOut, and received -> document latency, for the dashboard.
        kit.count(f"Jobs{delivery.outcome.title().replace('_', '')}")
        kit.metrics.add_metric(name="EndToEndSeconds", unit=MetricUnit.Seconds, value=delivery.seconds)
        # What the work costs, per rule and agent: its own EMF record (the dimensions differ per job). The
        # service is named as every other metric of this function's (not POWERTOOLS_SERVICE_NAME's value).
        credits = EphemeralMetrics(namespace="vlmwatch", service="complete")
        credits.add_dimension(name="rule", value=delivery.rule or "none")
        credits.add_dimension(name="agent", value=delivery.agent or "prompt")
        credits.add_metric(name="CreditsUsed", unit=MetricUnit.Count, value=delivery.credits)
        credits.flush_metrics()


@kit.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
