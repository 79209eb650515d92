"""IngestFunction: S3 "object created" events (via SQS, or direct) → jobs → VLM Run executions."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch.core.s3events import refs_from_body
from vlmwatch.runtime import wiring
from vlmwatch.runtime.handler_kit import HandlerKit

kit = HandlerKit("ingest")
# A batch in which every record failed (say, all rate limited) is still a partial-batch response:
# SQS retries exactly the reported messages either way, and the function does not count as errored.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@kit.tracer.capture_method
def accept_body(body: str | dict[str, Any]) -> None:
    """Accept every object in one message; raising marks the message failed (it will be retried)."""
    for ref in refs_from_body(body):
        kit.logger.append_keys(bucket=ref.bucket, key=ref.key)
        outcome = wiring.ingestor().accept(ref)
        kit.count(f"Ingest{outcome.value.title()}")


def handle_record(record: SQSRecord) -> None:
    try:
        accept_body(record.body)
    except Exception:
        # Counted so it can be alarmed on; re-raised so the message is retried (and, in the end, dead-lettered).
        kit.count("IngestFailed")
        kit.logger.exception("ingest failed; the message will be retried", extra={"message_id": record.message_id})
        raise


@kit.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:s3":
        # Wired directly to a bucket notification: S3 retries the whole event if we raise.
        accept_body(event)
        return {"accepted": len(records)}
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
