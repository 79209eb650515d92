"""The pipeline's configuration as data: routing rules, prompts and schemas, one numbered version at a time.

The functions' environment holds at most 4 KB, and a change there needs a redeploy. A configuration is
instead a document pushed by an operator (``vlmwatch config push``), validated in full before it is stored,
and read by the functions through a cache (``vlmwatch.adapters.config_store``). Version 0 is the
deployment's own parameters (``RoutingRules``, ``AgentName``, ``Prompt``...): what runs until a first push,
so a deploy with no configuration still processes files with the default prompt.

A configuration file looks like::

    {"rules": [{"name": "invoices", "prefix": "in/invoices/", "agent": "invoice-extractor:v2"}],
     "default": {"prompt": "Describe this document.", "json_schema": {...}}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from vlmwatch.core.errors import ConfigError
from vlmwatch.core.routing import Route, RuleSet, ServiceTier, Skip

# The version of a deployment that never had a configuration pushed: its template parameters.
PARAMETERS_VERSION = 0
# A DynamoDB item holds 400 KB; the stored copy carries a little metadata beside the document.
MAX_CONFIG_BYTES = 350_000


class DefaultRoute(BaseModel):
    """What runs on an object no rule matches: an agent, or an inline prompt with its schema (not both)."""

    model_config = {"extra": "forbid", "frozen": True}

    agent: str | None = None
    prompt: str | None = None
    json_schema: dict[str, Any] | None = None
    model: str | None = None
    service_tier: ServiceTier | None = None

    @model_validator(mode="after")
    def _one_target(self) -> DefaultRoute:
        # A rule's rules: exactly one of agent and prompt (here, unlike AgentName + Prompt, "both" is a
        # mistake to report, not a precedence to apply), a valid agent name, a schema only with a prompt.
        Route(rule="default", agent=self.agent, prompt=self.prompt, json_schema=self.json_schema)
        return self

    def route(self, model: str | None = None) -> Route:
        if self.agent:
            return Route(rule="default", agent=self.agent, model=self.model or model, service_tier=self.service_tier)
        return Route(
            rule="default",
            prompt=self.prompt,
            json_schema=self.json_schema,
            model=self.model or model,
            service_tier=self.service_tier,
        )


class PipelineConfig(BaseModel):
    """One configuration: ordered rules and the default. Validation builds every route once."""

    model_config = {"extra": "forbid", "frozen": True}

    rules: RuleSet = Field(default_factory=RuleSet)
    default: DefaultRoute | None = None

    def default_route(self) -> Route | None:
        return self.default.route() if self.default is not None else None

    def resolve(self, key: str, content_type: str | None, metadata: dict[str, str] | None = None) -> Route | Skip:
        return self.rules.resolve(key, content_type, metadata, default=self.default_route())

    def canonical(self) -> str:
        """The document as stored and hashed: sorted keys, no whitespace, unset fields left out."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]


def parse_config(text: str | bytes) -> PipelineConfig:
    """Validate a configuration document in full.

    Raises:
        ConfigError: naming every problem (JSON syntax, unknown fields, bad agent names, duplicate rules).
    """
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration is {len(raw):,} bytes; at most {MAX_CONFIG_BYTES:,} are stored")
    try:
        return PipelineConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


@dataclass(frozen=True)
class ConfigVersion:
    """A configuration as it took effect: its number, when and why it was pushed."""

    number: int
    config: PipelineConfig
    pushed_at: int = 0
    note: str = ""

    @property
    def label(self) -> str:
        return f"v{self.number}" if self.number else "v0 (template parameters)"

    def to_json(self) -> str:
        body = {"version": self.number, "pushed_at": self.pushed_at, "note": self.note, "digest": self.config.digest}
        return json.dumps({**body, "config": json.loads(self.config.canonical())}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ConfigVersion:
        data = json.loads(text)
        return cls(
            number=int(data["version"]),
            config=PipelineConfig.model_validate(data["config"]),
            pushed_at=int(data.get("pushed_at", 0)),
            note=str(data.get("note", "")),
        )


def from_parameters(
    rules: RuleSet, default_route: Route | None, *, model: str | None = None, service_tier: ServiceTier | None = None
) -> ConfigVersion:
    """Version 0: the configuration the template's parameters describe."""
    default = None
    if default_route is not None:
        default = DefaultRoute(
            agent=default_route.agent,
            prompt=default_route.prompt,
            json_schema=default_route.json_schema,
            model=default_route.model or model,
            service_tier=default_route.service_tier or service_tier,
        )
    return ConfigVersion(number=PARAMETERS_VERSION, config=PipelineConfig(rules=rules, default=default))


@dataclass(frozen=True)
class RoutingChange:
    """One recent file the new configuration would route differently."""

    key: str
    before: str
    after: str


def describe(outcome: Route | Skip | None) -> str:
    if outcome is None:
        return "-"
    if isinstance(outcome, Skip):
        return f"skip ({outcome.reason})"
    target = f"agent {outcome.agent}" if outcome.agent else "prompt"
    return f"rule {outcome.rule}: {target}"


def routing_changes(
    before: PipelineConfig, after: PipelineConfig, files: Iterable[tuple[str, str | None]]
) -> list[RoutingChange]:
    """Which of these (key, content type) pairs the new configuration routes differently (push --dry-run)."""
    changes = []
    for key, content_type in files:
        old, new = before.resolve(key, content_type), after.resolve(key, content_type)
        if old != new:
            changes.append(RoutingChange(key=key, before=describe(old), after=describe(new)))
    return changes
