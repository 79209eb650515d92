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


def test_metadata_agent_overrides_only_where_a_rule_opts_in_and_is_validated():
    rules = RuleSet.model_validate(
        [
            {"name": "invoices", "prefix": "invoices/", "agent": "invoice:v1", "metadata_agent": True},
            {"name": "receipts", "prefix": "receipts/", "agent": "receipt:v1"},
        ]
    )
    # Opted in: any agent the rules name (no AllowedAgents set), by name and version.
    assert rules.resolve("invoices/a.pdf", None, {"vlmrun-agent": "receipt:v1"}).agent == "receipt:v1"
    bad = rules.resolve("invoices/a.pdf", None, {"vlmrun-agent": "no spaces allowed"})
    assert isinstance(bad, Skip) and "not a valid agent name" in bad.reason
    unlisted = rules.resolve("invoices/a.pdf", None, {"vlmrun-agent": "special:v2"})
    assert isinstance(unlisted, Skip) and "not an allowed agent" in unlisted.reason
    # Not opted in: the metadata picks nothing, the rule's own agent runs.
    assert rules.resolve("receipts/a.pdf", None, {"vlmrun-agent": "invoice:v1"}).agent == "receipt:v1"


def test_allowed_agents_bound_the_override_and_opt_the_default_in():
    rules = RuleSet.model_validate([{"name": "any", "agent": "doc:v1", "metadata_agent": True}])
    allowed = frozenset({"special", "other:v3"})
    assert rules.resolve("a.pdf", None, {"vlmrun-agent": "special:v9"}, allowed_agents=allowed).agent == "special:v9"
    assert rules.resolve("a.pdf", None, {"vlmrun-agent": "other:v3"}, allowed_agents=allowed).agent == "other:v3"
    refused = rules.resolve("a.pdf", None, {"vlmrun-agent": "other:v4"}, allowed_agents=allowed)
    assert isinstance(refused, Skip) and "not an allowed agent" in refused.reason
    # The default route: only with AllowedAgents set.
    assert RuleSet().resolve("a.pdf", None, {"vlmrun-agent": "special:v1"}, default=DEFAULT).agent == "doc:v1"
    picked = RuleSet().resolve("a.pdf", None, {"vlmrun-agent": "special:v1"}, default=DEFAULT, allowed_agents=allowed)
    assert picked.agent == "special:v1"


def test_metadata_with_no_rule_and_no_default_starts_nothing():
    # Prompt="" with rules = process only what a rule matches: the metadata cannot add work.
    decision = RULES.resolve("misc/a.bin", None, {"vlmrun-agent": "invoice:v1"})
    assert isinstance(decision, Skip) and "no routing rule matches" in decision.reason
    listed = RULES.resolve("misc/a.bin", None, {"vlmrun-agent": "invoice:v1"}, allowed_agents={"invoice"})
    assert isinstance(listed, Skip)


def test_allowed_agents_and_the_input_filter_come_from_the_environment():
    settings = Settings.from_env(
        BASE | {"ALLOWED_AGENTS": " a:v1, team/b ,", "INPUT_PREFIX": "in/", "INPUT_SUFFIX": ".pdf"}
    )
    assert settings.allowed_agents == frozenset({"a:v1", "team/b"})
    assert settings.accepts_key("in/x.pdf") and not settings.accepts_key("in/x.txt")
    assert not settings.accepts_key("other/x.pdf")
    with pytest.raises(ConfigError, match="ALLOWED_AGENTS"):
        Settings.from_env(BASE | {"ALLOWED_AGENTS": "ok:v1,../admin"})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.vlm.run/v1", True),
        ("http://127.0.0.1:8123/v1", True),
        ("http://localhost:8123/v1", True),
        ("http://emulator.localhost/v1", True),
        ("http://api.vlm.run/v1", False),
        ("http://127.0.0.1.evil.example/v1", False),
        ("ftp://api.vlm.run/v1", False),
        ("https:///v1", False),
    ],
)
def test_the_vlmrun_base_url_must_be_https_except_on_this_machine(url, ok):
    env = BASE | {"VLMRUN_BASE_URL": url}
    if ok:
        assert Settings.from_env(env).vlmrun_base_url == url
    else:
        with pytest.raises(ConfigError, match="VLMRUN_BASE_URL"):
            Settings.from_env(env)


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
