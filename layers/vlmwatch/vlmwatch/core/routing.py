"""Routing: decide what runs on an object (an agent, or an inline prompt) or that nothing does.

Rules are checked in order; the first match wins. Object metadata ``x-amz-meta-vlmrun-agent`` lets a
producer pick the agent per file, only where the operator opted in and only among the agents allowed:

* a matched rule opts in with ``"metadata_agent": true``; the default route (no rule matched) opts in when
  ``ALLOWED_AGENTS`` is set. Elsewhere the metadata is ignored (the rule's own route runs), and with no
  rule and no default nothing runs, whatever the metadata says;
* the name must be in ``ALLOWED_AGENTS`` (``name`` allows every version of it, ``name:version`` that one),
  or, when that is empty, one of the agents the rules and the default name;
* a skip rule still skips (the override never turns on work the operator turned off), and the name must
  pass the same grammar as a rule's agent.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel, model_validator

# VLM Run's delivery tiers (the SDK's GenerationConfig.service_tier): "flex" is documented at half the
# credits with higher latency, "priority" at a premium; "auto" (or none) leaves it to the server.
ServiceTier = Literal["auto", "default", "standard", "flex", "priority"]

# "name" or "name:version"; a name may have "/"-separated segments ("team/invoices"), each starting with a
# letter or digit, so "..", "/x", "x//y" and "x/" never pass. At most 128 characters in all.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*"
AGENT_NAME = re.compile(rf"^(?=.{{1,128}}$){_SEGMENT}(?:/{_SEGMENT})*(?::[A-Za-z0-9][A-Za-z0-9._-]*)?$")
METADATA_AGENT_KEY = "vlmrun-agent"


class Route(BaseModel):
    """What runs on one object. Exactly one of ``agent`` and ``prompt`` is set."""

    model_config = {"frozen": True}

    rule: str
    agent: str | None = None
    prompt: str | None = None
    json_schema: dict[str, Any] | None = None
    model: str | None = None
    service_tier: ServiceTier | None = None
    # Which configuration version chose this route (0: the template parameters): provenance, recorded in
    # every document as ran.config_version, so a result says which rules and prompt produced it.
    config_version: int = 0

    @model_validator(mode="after")
    def _one_target(self) -> Route:
        if bool(self.agent) == bool(self.prompt):
            raise ValueError(f"route {self.rule!r}: set exactly one of 'agent' and 'prompt'")
        if self.agent and not AGENT_NAME.match(self.agent):
            raise ValueError(f"route {self.rule!r}: agent {self.agent!r} is not 'name' or 'name:version'")
        if self.json_schema is not None and not self.prompt:
            raise ValueError(f"route {self.rule!r}: 'json_schema' only applies to an inline 'prompt'")
        return self


class Skip(BaseModel):
    """Nothing runs on this object, on purpose; ``reason`` says why."""

    model_config = {"frozen": True}

    rule: str | None
    reason: str


class Rule(BaseModel):
    """One routing rule. Empty match fields match everything."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1)
    prefix: str = ""
    suffixes: list[str] = Field(default_factory=list)
    content_types: list[str] = Field(default_factory=list)
    agent: str | None = None
    prompt: str | None = None
    json_schema: dict[str, Any] | None = None
    model: str | None = None
    service_tier: ServiceTier | None = None
    skip: bool = False
    reason: str | None = None
    # x-amz-meta-vlmrun-agent may pick the agent for what this rule matches (within the allowed agents).
    metadata_agent: bool = False

    @model_validator(mode="after")
    def _target(self) -> Rule:
        if self.skip:
            if self.agent or self.prompt or self.metadata_agent:
                raise ValueError(f"rule {self.name!r}: a 'skip' rule cannot also name an agent or prompt")
        else:
            self.route()  # validates agent/prompt/json_schema now, at cold start
        return self

    def matches(self, key: str, content_type: str | None) -> bool:
        if self.prefix and not key.startswith(self.prefix):
            return False
        if self.suffixes and not key.lower().endswith(tuple(s.lower() for s in self.suffixes)):
            return False
        if self.content_types:
            ctype = (content_type or "").split(";")[0].strip().lower()
            if not any(fnmatch.fnmatchcase(ctype, pattern.lower()) for pattern in self.content_types):
                return False
        return True

    def route(self) -> Route:
        return Route(
            rule=self.name,
            agent=self.agent,
            prompt=self.prompt,
            json_schema=self.json_schema,
            model=self.model,
            service_tier=self.service_tier,
        )


class RuleSet(RootModel[list[Rule]]):
    """Ordered routing rules, validated as a whole (names must be unique)."""

    root: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [rule.name for rule in self.root]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        return self

    def resolve(
        self,
        key: str,
        content_type: str | None,
        metadata: dict[str, str] | None = None,
        *,
        default: Route | None = None,
        allowed_agents: Collection[str] = (),
    ) -> Route | Skip:
        """Pick the route for an object.

        Args:
            key: the decoded object key.
            content_type: the object's Content-Type, if known.
            metadata: user metadata without the ``x-amz-meta-`` prefix (as boto3 returns it).
            default: what runs when no rule matches.
            allowed_agents: the agents ``x-amz-meta-vlmrun-agent`` may name (``ALLOWED_AGENTS``); set, it
                also opts the default route in. Empty: only agents the rules (and default) name.
        """
        matched: Route | None = default
        opted_in = bool(allowed_agents) and default is not None
        for rule in self.root:
            if rule.matches(key, content_type):
                if rule.skip:
                    return Skip(rule=rule.name, reason=rule.reason or f"matched skip rule {rule.name!r}")
                matched, opted_in = rule.route(), rule.metadata_agent
                break
        if matched is None:
            return Skip(rule=None, reason="no routing rule matches and no default agent or prompt is configured")
        override = (metadata or {}).get(METADATA_AGENT_KEY)
        if override is None or not opted_in:
            return matched  # the metadata picks nothing where the operator did not opt in
        if not AGENT_NAME.match(override):
            return Skip(
                rule="metadata",
                reason=f"x-amz-meta-{METADATA_AGENT_KEY} {_shown(override)} is not a valid agent name "
                "('name' or 'name:version'; letters, digits, '_', '-', '.', '/' between segments)",
            )
        allowed = set(allowed_agents) or self.named_agents(default)
        if not agent_allowed(override, allowed):
            return Skip(
                rule="metadata",
                reason=f"x-amz-meta-{METADATA_AGENT_KEY} {_shown(override)} is not an allowed agent "
                "(AllowedAgents, or the agents the routing rules name)",
            )
        return Route(rule="metadata", agent=override, model=matched.model, service_tier=matched.service_tier)

    def named_agents(self, default: Route | None = None) -> set[str]:
        """Every agent the rules (and the default route) name."""
        names = {rule.agent for rule in self.root if rule.agent}
        if default is not None and default.agent:
            names.add(default.agent)
        return names


def agent_allowed(agent: str, allowed: Collection[str]) -> bool:
    """``agent`` is listed, or its name is listed without a version (every version of it is allowed)."""
    return agent in allowed or agent.split(":", 1)[0] in allowed


def parse_agent_list(text: str | Collection[str] | None) -> frozenset[str]:
    """``ALLOWED_AGENTS``: comma-separated agent names, each checked against the agent-name grammar.

    Raises:
        ValueError: a listed name is not a valid agent name.
    """
    items = text.split(",") if isinstance(text, str) else list(text or ())
    names = frozenset(item.strip() for item in items if item.strip())
    bad = sorted(name for name in names if not AGENT_NAME.match(name))
    if bad:
        raise ValueError(f"not valid agent names: {', '.join(repr(b[:80]) for b in bad)}")
    return names


def _shown(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))
