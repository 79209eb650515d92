"""Moved to :mod:`vlmwatch_local.cloud.loops`.

An alias until ``tests/conftest.py`` and the tests that still name this module import from the new home;
then delete this file.
"""

from vlmwatch_local.cloud.loops import (
    FunctionUrlApp,
    Invocation,
    LambdaContext,
    LocalAws,
    function_url_event,
    lambda_stream_record,
    load_handler,
    scheduled_event,
    sqs_record,
    stream_filter,
)

__all__ = [
    "FunctionUrlApp",
    "Invocation",
    "LambdaContext",
    "LocalAws",
    "function_url_event",
    "lambda_stream_record",
    "load_handler",
    "scheduled_event",
    "sqs_record",
    "stream_filter",
]
