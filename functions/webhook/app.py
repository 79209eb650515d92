"""WebhookFunction (behind a Lambda function URL): VLM Run callbacks → verified → re-fetched → job updated."""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch.flows.webhooks import SIGNATURE_HEADER
from vlmwatch.runtime import wiring
from vlmwatch.runtime.handler_kit import HandlerKit

kit = HandlerKit("webhook")


@kit.handler(event_source=LambdaFunctionUrlEvent)
def lambda_handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict[str, Any]:
    if event.request_context.http.method != "POST":
        return _response(405, {"message": "Method not allowed"})
    # The signature covers the raw bytes: never re-serialise the body before checking it.
    raw = base64.b64decode(event.body or "") if event.is_base64_encoded else (event.body or "").encode()
    # event.headers is case-insensitive; the query carries the job id, attempt and token we put in the URL.
    query = dict(event.query_string_parameters or {})
    status, body = wiring.webhook_receiver().handle(raw, event.headers.get(SIGNATURE_HEADER), query)
    kit.count(f"Webhook{status}")
    return _response(status, body)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
