"""What each invocation tells CloudWatch about VLM Run: requests sent, 429s met, and requests held back by
the deployment's budget (per-process deltas)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vlmwatch.runtime import wiring

_reported = {"requests": 0, "rate_limited": 0, "held_back": 0}
wiring.on_reset(lambda: _reported.update(requests=0, rate_limited=0, held_back=0))


def report_usage(metrics: Any) -> None:
    """Add this invocation's VLM Run requests and 429s to a powertools ``Metrics``.

    Nothing is built to report zero: a handler that never talked to VLM Run adds nothing.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    if wiring.is_built(wiring.vlmrun_client):
        sent = wiring.vlmrun_client().requests_sent
        metrics.add_metric(name="VlmRunRequests", unit=MetricUnit.Count, value=sent - _reported["requests"])
        _reported["requests"] = sent
    if wiring.is_built(wiring.breaker):
        # Every change this process made to the account's breaker: BreakerOpenedCredits, BreakerProbe, ...
        transitions, wiring.breaker().transitions[:] = list(wiring.breaker().transitions), []
        for transition in transitions:
            name = "Breaker" + "".join(part.title() for part in transition.split(":"))
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if wiring.is_built(wiring.pressure):
        hits = wiring.pressure().hits
        metrics.add_metric(name="VlmRunRateLimited", unit=MetricUnit.Count, value=hits - _reported["rate_limited"])
        _reported["rate_limited"] = hits
        # Requests not sent because the budget (or the breaker) said wait: their work waits on its row.
        held = wiring.pressure().deferred
        metrics.add_metric(name="VlmRunHeldBack", unit=MetricUnit.Count, value=held - _reported["held_back"])
        _reported["held_back"] = held


def reports_usage(metrics: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Handler decorator (innermost, under ``@metrics.log_metrics``): :func:`report_usage` on the way out."""

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                report_usage(metrics)

        return wrapped

    return wrap
