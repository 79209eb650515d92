"""PollerFunction: on a schedule, poll the in-flight jobs that are due and sweep what is stuck."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vlmwatch.adapters.breaker import Reason
from vlmwatch.runtime import wiring
from vlmwatch.runtime.handler_kit import HandlerKit

kit = HandlerKit("poller")
GAUGES = {
    "VlmRunUnavailable": Reason.UNAVAILABLE,
    "VlmRunOutOfCredits": Reason.CREDITS,
    "VlmRunCredentialsRefused": Reason.CREDENTIALS,
    "VlmRunBudgetSpent": Reason.BUDGET,
    "IntakePaused": Reason.PAUSED,
}


@kit.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The run sizes itself by the request budget and stops starting pages as the function's timeout nears.
    summary = wiring.sweeper().run(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    for name in ("due", "polled", "finished", "timed_out", "errors", "pages"):
        kit.count(f"Poll{name.title().replace('_', '')}", getattr(summary, name))
    # One gauge per reason, every run: each alarm says which bad day VLM Run is having, for as long as it lasts.
    wiring.ledger().release_if_within_budget()  # a new month (or a raised budget) lets work through again
    state = wiring.breaker().state()
    for name, reason in GAUGES.items():
        kit.count(name, int(state.open and state.reason == reason))
    result = asdict(summary)
    result.pop("outcomes")
    kit.logger.info("poll run", extra=result)
    return result
