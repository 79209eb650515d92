"""Routing rules and settings: validated at cold start, loud when wrong."""

from __future__ import annotations

import pytest

from vlmwatch.core.errors import ConfigError
from vlmwatch.core.routing import Route, RuleSet, Skip
from vlmwatch.core.settings import Settings

BASE = {"JOBS_TABLE_NAME": "jobs", "OUTPUT_BUCKET": "out"}
RULES = RuleSet.model_validate(
    [
        {"name": "skip-tmp", "prefix": "tmp/", "skip": True, "reason": "scratch"},
        {"name": "invoices", "prefix": "invoices/", "suffixes": [".pdf"], "agent": "invoice:v1"},
        {"name": "images", "content_types": ["image/*"], "prompt": "Describe", "json_schema": {"type": "object"}},
    ]
)
DEFAULT = Route(rule="default", agent="doc:v1")


@pytest.mark.parametrize(
    ("key", "ctype", "expected"),
    [
        ("invoices/a.PDF", "application/pdf", "invoices"),
        ("invoices/a.txt", "text/plain", "default"),
        ("photos/cat.jpg", "image/jpeg; charset=binary", "images"),
        ("tmp/invoices/a.pdf", "application/pdf", "skip-tmp"),
    ],
)
def test_first_matching_rule_wins(key, ctype, expected):
    decision = RULES.resolve(key, ctype, default=DEFAULT)
    assert decision.rule == expected


def test_no_rule_and_no_default_is_a_skip_with_a_reason():
    decision = RULES.resolve("misc/a.bin", "application/octet-stream")
    assert isinstance(decision, Skip)
    assert "no routing rule matches" in decision.reason


def test_metadata_agent_overrides_rules_and_is_validated():
    assert RULES.resolve("invoices/a.pdf", None, {"vlmrun-agent": "special:v2"}).agent == "special:v2"
    bad = RULES.resolve("invoices/a.pdf", None, {"vlmrun-agent": "no spaces allowed"})
    assert isinstance(bad, Skip) and "not a valid agent name" in bad.reason


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ('[{"name": "a", "agent": "x:v1", "prompt": "p"}]', "exactly one of 'agent' and 'prompt'"),
        ('[{"name": "a"}]', "exactly one of 'agent' and 'prompt'"),
        ('[{"name": "a", "agent": "x:v1", "json_schema": {}}]', "only applies to an inline 'prompt'"),
        ('[{"name": "a", "agent": "x:v1"}, {"name": "a", "agent": "y:v1"}]', "duplicate rule names: a"),
        ('[{"name": "a", "agent": "x:v1", "sufixes": [".pdf"]}]', "Extra inputs are not permitted"),
        ("not json", "Invalid JSON"),
    ],
)
def test_bad_rules_fail_at_cold_start_naming_the_variable(rules, message):
    with pytest.raises(ConfigError, match="ROUTING_RULES") as info:
        Settings.from_env(BASE | {"ROUTING_RULES": rules})
    assert message in str(info.value)


def test_settings_defaults_and_missing_required_values():
    settings = Settings.from_env(BASE | {"OUTPUT_PREFIX": "/results", "DEFAULT_AGENT_NAME": ""})
    assert settings.output_prefix == "results/"
    assert settings.default_agent is None
    assert settings.input_mode == "url"
    with pytest.raises(ConfigError, match="JOBS_TABLE_NAME"):
        Settings.from_env({"OUTPUT_BUCKET": "out"})
    with pytest.raises(ConfigError, match="POLL_CAP_SECONDS must be >= POLL_BASE_SECONDS"):
        Settings.from_env(BASE | {"POLL_BASE_SECONDS": "100", "POLL_CAP_SECONDS": "10"})
