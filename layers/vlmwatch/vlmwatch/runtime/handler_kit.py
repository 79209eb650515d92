"""Everything a Lambda handler needs besides its own work: logger, metrics, tracer, and one decorator.

Each handler is ``kit = HandlerKit("ingest")`` plus ``@kit.handler`` on its ``lambda_handler``: the
four stacked decorators (context logging with cleared state, metrics flushed, tracing, VLM Run usage
reported) are spelled once, here, in the order they must nest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics

from vlmwatch.runtime import tracing
from vlmwatch.runtime.metrics import reports_usage


def route_library_logs(logger: Logger, *, force: bool = False) -> None:
    """Send the ``vlmwatch.*`` loggers' lines through a handler's powertools ``Logger``.

    Without this they reach the root logger only: plain text in CloudWatch, without the keys the handler
    appended (``job_id``). With it they are JSON lines with the handler's level, keys and the logger name.
    Only in Lambda (or ``force``): elsewhere (tests, the local runner) the standard logging tree stays as is.
    """
    if not (force or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")):
        return
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("vlmwatch")  # registered before the copy looks for it
    copy_config_to_registered_loggers(source_logger=logger, include={"vlmwatch"})


class HandlerKit:
    """One function's logger (``vlmwatch-<name>``), metrics (namespace ``vlmwatch``) and tracer."""

    def __init__(self, name: str) -> None:
        self.logger = Logger(service=f"vlmwatch-{name}")
        route_library_logs(self.logger)  # vlmwatch.* lines: JSON, with this handler's keys
        self.metrics = Metrics(namespace="vlmwatch", service=name)
        self.tracer = tracing.tracer(f"vlmwatch-{name}")  # a no-op unless the X-Ray SDK is in the layer

    def count(self, name: str, value: float = 1) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def handler(self, fn: Callable[..., Any] | None = None, *, event_source: type | None = None) -> Callable[..., Any]:
        """Decorate a ``lambda_handler``; ``event_source`` wraps the event in a powertools data class."""

        def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
            inner = reports_usage(self.metrics)(handler)
            if event_source is not None:
                from aws_lambda_powertools.utilities.data_classes import event_source as wrap_event

                inner = wrap_event(data_class=event_source)(inner)
            inner = self.tracer.capture_lambda_handler(inner)
            inner = self.metrics.log_metrics(inner)
            return self.logger.inject_lambda_context(clear_state=True)(inner)

        return wrap(fn) if fn is not None else wrap
