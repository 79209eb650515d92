"""Configuration as versioned data: validated in full before it takes effect, read through a cache."""

from __future__ import annotations

import json

import boto3
import pytest

from vlmwatch.adapters.config_store import ConfigConflictError, ConfigSource, ConfigStore
from vlmwatch.core.config import PipelineConfig, from_parameters, parse_config, routing_changes
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.routing import Route, RuleSet


def big_schema(fields: int) -> dict:
    return {
        "type": "object",
        "properties": {f"field_{i}": {"type": "string", "description": f"the {i}th field " * 4} for i in range(fields)},
    }


RULES_V1 = {
    "rules": [
        {"name": "invoices", "prefix": "in/invoices/", "prompt": "Extract the invoice.", "json_schema": big_schema(40)},
        {"name": "receipts", "prefix": "in/receipts/", "prompt": "Extract the receipt.", "json_schema": big_schema(40)},
    ],
    "default": {"prompt": "Describe this document."},
}


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(stack):
    return ConfigStore(boto3.client("dynamodb"), stack.table, clock=lambda: 1_800_000_000)


@pytest.fixture
def source(stack):
    ticks = Ticks()
    fallback = from_parameters(RuleSet(), Route(rule="default", prompt="the template's prompt"))
    src = ConfigSource(boto3.client("dynamodb"), stack.table, fallback, max_age=60, clock=ticks)
    return src, ticks


def test_rules_over_4_kb_take_effect_without_a_redeploy_once_the_cache_ages(store, source):
    src, ticks = source
    assert src.current().number == 0  # nothing pushed: the template's parameters rule
    assert src.current().config.resolve("in/invoices/a.pdf", None).prompt == "the template's prompt"

    text = json.dumps(RULES_V1)
    assert len(text) > 4096  # more than the whole Lambda environment may hold
    pushed = store.push(parse_config(text), note="first rules")
    assert pushed.number == 1

    ticks.now += 61  # the "nothing pushed" answer was cached for max_age; then the push is seen
    current = src.current()
    assert current.number == 1
    route = current.config.resolve("in/invoices/a.pdf", "application/pdf")
    assert route.rule == "invoices" and len(route.json_schema["properties"]) == 40
    assert current.config.resolve("elsewhere.txt", None).prompt == "Describe this document."


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("{not json", "invalid configuration"),
        ('{"rules": [{"name": "a", "agent": "x"}, {"name": "a", "agent": "y"}]}', "duplicate rule names: a"),
        ('{"rules": [{"name": "a", "agent": "../etc"}]}', "is not 'name' or 'name:version'"),
        ('{"rules": [{"name": "a", "agent": "x", "prompt": "y"}]}', "set exactly one of 'agent' and 'prompt'"),
        ('{"rules": [], "defualt": {"prompt": "typo"}}', "defualt"),
        ('{"default": {"agent": "x", "prompt": "y"}}', "set exactly one of 'agent' and 'prompt'"),
    ],
)
def test_an_invalid_configuration_is_refused_with_the_reason(document, reason):
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        parse_config(document)


def test_a_refused_push_leaves_the_running_rules_unchanged(store, source):
    src, ticks = source
    store.push(parse_config(json.dumps(RULES_V1)))
    with pytest.raises(ConfigError):
        store.push(parse_config('{"rules": [{"name": "a", "agent": "bad name!"}]}'))
    ticks.now += 61
    assert src.current().number == 1 and store.current().number == 1
    assert [v.number for v in store.history()] == [1]


def test_two_pushes_prepared_against_the_same_version_cannot_both_win(store):
    store.push(parse_config(json.dumps(RULES_V1)))
    store.push(PipelineConfig(), expect=1)
    with pytest.raises(ConfigConflictError, match="nothing was written"):
        store.push(PipelineConfig(), expect=1)
    assert [v.number for v in store.history()] == [2, 1]


def test_history_is_newest_first_and_rollback_is_a_new_version(store):
    first = store.push(parse_config(json.dumps(RULES_V1)), note="v1 rules")
    store.push(parse_config('{"default": {"agent": "doc-extractor:v2"}}'), note="agent v2")
    back = store.rollback(1)
    assert back.number == 3 and back.note == "rollback to v1"
    assert back.config.digest == first.config.digest
    assert [(v.number, v.note) for v in store.history()] == [(3, "rollback to v1"), (2, "agent v2"), (1, "v1 rules")]
    with pytest.raises(ConfigError, match="v9 does not exist"):
        store.rollback(9)


def test_a_hand_written_row_that_does_not_validate_keeps_the_last_good_version(stack, store, source):
    src, ticks = source
    store.push(parse_config(json.dumps(RULES_V1)))
    ticks.now += 61
    assert src.current().number == 1
    bad = json.dumps({"version": 2, "config": {"rules": [{"name": "x", "agent": "no spaces allowed"}]}})
    boto3.client("dynamodb").put_item(
        TableName=stack.table, Item={"job_id": {"S": "#config"}, "config": {"S": bad}, "current_version": {"N": "2"}}
    )
    ticks.now += 61
    assert src.current().number == 1


def test_dry_run_names_the_files_the_new_rules_route_differently():
    before = parse_config(json.dumps(RULES_V1))
    after = parse_config(
        json.dumps({"rules": [RULES_V1["rules"][0]], "default": {"agent": "doc-extractor:v2"}})  # receipts dropped
    )
    files = [("in/invoices/a.pdf", "application/pdf"), ("in/receipts/r.png", "image/png"), ("x.txt", None)]
    changes = routing_changes(before.model_copy(), after, files)
    assert [(c.key, c.before, c.after) for c in changes] == [
        ("in/receipts/r.png", "rule receipts: prompt", "rule default: agent doc-extractor:v2"),
        ("x.txt", "rule default: prompt", "rule default: agent doc-extractor:v2"),
    ]


def test_a_stored_configuration_that_does_not_validate_with_nothing_good_yet_is_an_error(stack, source):
    src, _ = source
    bad = json.dumps({"version": 1, "config": {"rules": [{"name": "x", "agent": "no spaces allowed"}]}})
    boto3.client("dynamodb").put_item(
        TableName=stack.table, Item={"job_id": {"S": "#config"}, "config": {"S": bad}, "current_version": {"N": "1"}}
    )
    # Routing with the template's v0 instead would be silently wrong: the invocation fails, the message waits.
    with pytest.raises(ConfigError, match="does not validate"):
        src.current()
