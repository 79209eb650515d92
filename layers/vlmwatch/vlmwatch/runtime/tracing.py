"""X-Ray tracing that costs nothing unless it can and should run.

powertools' ``Tracer`` imports the X-Ray SDK, which builds botocore clients at import (about 300 ms of
cold start) and brings botocore into the layer (30 MB). vlmwatch's layer ships without the SDK: Lambda's
active tracing still records every invocation's segment. Add ``aws-xray-sdk`` to the layer's requirements
to get per-call subsegments too; this then returns a real ``Tracer`` (unless ``POWERTOOLS_TRACE_DISABLED``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class NoopTracer:
    """The decorators handlers use, doing nothing."""

    def capture_lambda_handler(self, handler: F) -> F:
        return handler

    def capture_method(self, method: F) -> F:
        return method

    def put_annotation(self, key: str, value: Any) -> None:
        return None


def sdk_wanted() -> bool:
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true", "yes"):
        return False
    return importlib.util.find_spec("aws_xray_sdk") is not None


def tracer(service: str) -> Any:
    """A powertools ``Tracer`` when the X-Ray SDK is installed and tracing is not disabled, else a no-op."""
    if not sdk_wanted():
        return NoopTracer()
    from aws_lambda_powertools.tracing import Tracer

    return Tracer(service=service)
