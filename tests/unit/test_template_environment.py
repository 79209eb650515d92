"""The functions' environment as the template deploys it: a setting the library reads in every function that
schedules a poll must reach every one of them, not only the one that reads it most."""

from __future__ import annotations

from vlmwatch_local.cloud.provision import StackResources, _Resolver, load_template

TEMPLATE = load_template()
# The functions that write a job's next_poll_at (submit, poll once, callback, sweep).
SCHEDULERS = ("IngestFunction", "PollOnceFunction", "WebhookFunction", "PollerFunction")


def environment(function: str, **parameters: str) -> dict[str, str]:
    """One function's variables (Globals, then its own) for these parameters, as CloudFormation resolves them."""
    params = {name: str(spec.get("Default", "")) for name, spec in TEMPLATE["Parameters"].items()}
    stack = StackResources(region="us-east-1", parameters={**params, **parameters}, state_machine_arn="arn:sm")
    resolver = _Resolver(stack)
    variables = dict(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    own = TEMPLATE["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    variables.update({k: v for k, v in own.items() if k != "CALLBACK_URL"})  # a URL only AWS knows
    return {name: str(resolver.resolve(value)) for name, value in variables.items()}


def test_in_stepfunctions_mode_every_function_that_schedules_a_poll_leaves_the_sweeper_its_margin():
    # next_poll_at carries the sweeper's margin: a function without it would make every job due to the
    # sweeper while its own state machine is still polling it (two polls, twice the requests).
    for function in SCHEDULERS:
        env = environment(function, PollingMode="stepfunctions", EnableWebhook="true")
        assert env.get("SWEEP_OVERDUE_SECONDS") == "300", function
        assert environment(function, PollingMode="schedule").get("SWEEP_OVERDUE_SECONDS") == "0", function
