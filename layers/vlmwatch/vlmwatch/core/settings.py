"""Runtime settings, read once per process from the Lambda environment."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from vlmwatch.core.errors import ConfigError
from vlmwatch.core.routing import Route, RuleSet, ServiceTier, parse_agent_list

# With webhooks on, the first poll waits this long (capped by POLL_CAP_SECONDS): callbacks do the work.
WEBHOOK_SAFETY_NET_SECONDS = 600

# Environment variable → field name. Kept explicit so the template and this file can be diffed by eye.
_ENV = {
    "JOBS_TABLE_NAME": "jobs_table",
    "INPUT_BUCKET": "input_bucket",
    "OUTPUT_BUCKET": "output_bucket",
    "OUTPUT_PREFIX": "output_prefix",
    "ROUTING_RULES": "routing_rules",
    "DEFAULT_AGENT_NAME": "default_agent",
    "DEFAULT_PROMPT": "default_prompt",
    "DEFAULT_JSON_SCHEMA": "default_json_schema",
    "VLMRUN_MODEL": "model",
    "VLMRUN_BASE_URL": "vlmrun_base_url",
    "VLMRUN_API_KEY_SECRET": "api_key_secret",
    "VLMRUN_ENVIRONMENT": "vlmrun_environment",
    "INPUT_MODE": "input_mode",
    "PRESIGN_TTL_SECONDS": "presign_ttl_seconds",
    "POLL_BASE_SECONDS": "poll_base_seconds",
    "POLL_CAP_SECONDS": "poll_cap_seconds",
    "POLL_AGE_FACTOR": "poll_age_factor",
    "JOB_DEADLINE_SECONDS": "job_deadline_seconds",
    "POLLER_CONCURRENCY": "poller_concurrency",
    "POLLER_MAX_JOBS": "poller_max_jobs",
    "POLLER_MARGIN_SECONDS": "poller_margin_seconds",
    "POLL_SHARDS": "poll_shards",
    "CALLBACK_URL": "callback_url",
    "WEBHOOK_SECRET": "webhook_secret",
    "EVENT_BUS_NAME": "event_bus_name",
    "RESULT_TTL_DAYS": "result_ttl_days",
    "SECRET_MAX_AGE_SECONDS": "secret_max_age_seconds",
    "SUBMIT_LEASE_SECONDS": "submit_lease_seconds",
    "SUBMIT_DEADLINE_SECONDS": "submit_deadline_seconds",
    "EVIDENCE_WINDOW_SECONDS": "evidence_window_seconds",
    "DELIVERY_GRACE_SECONDS": "delivery_grace_seconds",
    "SWEEP_OVERDUE_SECONDS": "sweep_overdue_seconds",
    "VLMRUN_TIMEOUT_SECONDS": "vlmrun_timeout_seconds",
    "POLLING_MODE": "polling_mode",
    "POLL_CLAIM_SECONDS": "poll_claim_seconds",
    "MAX_OBJECT_BYTES": "max_object_bytes",
    "REQUESTS_PER_MINUTE": "requests_per_minute",
    "BUDGET_WINDOW_SECONDS": "budget_window_seconds",
    "LIST_POLL_MIN_JOBS": "list_poll_min_jobs",
    "STATE_MACHINE_ARN": "state_machine_arn",
    "WEBHOOK_ENABLED": "webhook_enabled",
    "SERVICE_TIER": "service_tier",
    "MONTHLY_CREDIT_BUDGET": "monthly_credit_budget",
    "MAX_IN_FLIGHT": "max_in_flight",
    "BREAKER_FAILURES": "breaker_failures",
    "BREAKER_PROBE_SECONDS": "breaker_probe_seconds",
    "BREAKER_RAMP_SECONDS": "breaker_ramp_seconds",
    "CONFIG_MAX_AGE_SECONDS": "config_max_age_seconds",
    "ALLOWED_AGENTS": "allowed_agents",
    "INPUT_PREFIX": "input_prefix",
    "INPUT_SUFFIX": "input_suffix",
    "MAX_ARTIFACTS": "max_artifacts",
    "VLMRUN_UPLOAD_HOSTS": "vlmrun_upload_hosts",
}

# Plain http only to this machine (the local VLM Run emulator): anywhere else the API key would travel
# in clear text.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class Settings(BaseModel):
    """Everything a handler needs to know about its deployment. Validated once, at cold start."""

    model_config = {"frozen": True, "extra": "forbid"}

    jobs_table: str
    output_bucket: str
    input_bucket: str | None = None
    output_prefix: str = ""
    routing_rules: RuleSet = Field(default_factory=RuleSet)
    default_agent: str | None = None
    default_prompt: str | None = None
    default_json_schema: dict[str, Any] | None = None
    model: str = "vlmrun-orion-1:auto"
    # The delivery tier for routes that do not name one ("flex": half the credits, more latency).
    service_tier: ServiceTier = "auto"
    vlmrun_base_url: str = "https://api.vlm.run/v1"
    api_key_secret: str = "vlmwatch/vlmrun-api-key"  # noqa: S105 - the secret's name, not its value
    vlmrun_environment: Literal["dev", "staging", "prod"] = "prod"
    # "url": VLM Run fetches a presigned S3 GET URL; "upload": the bytes go through the files API.
    input_mode: Literal["url", "upload"] = "url"
    # Batch executions can sit in a queue before VLM Run fetches the file: an hour, not minutes.
    presign_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    poll_base_seconds: int = Field(10, ge=1)
    poll_cap_seconds: int = Field(300, ge=1)
    # The next poll waits this fraction of the job's age at VLM Run (within base and cap): polls grow
    # with the log of a job's duration, and the latency they add stays a fraction of it.
    poll_age_factor: float = Field(0.5, gt=0, le=10)
    job_deadline_seconds: int = Field(3600, ge=1)
    poller_concurrency: int = Field(4, ge=1, le=64)
    # The page size of a poller run: due jobs read from the in-flight index, claimed and moved on at once.
    # With a request budget (REQUESTS_PER_MINUTE) a run goes on page after page while the window's budget
    # can serve them (counted in requests, the deliveries its polls set off included), within one budget
    # window and the function's remaining time (POLLER_MARGIN_SECONDS). Without a budget nothing says how
    # many requests VLM Run would take: a run takes one page, at most this many jobs a run.
    poller_max_jobs: int = Field(100, ge=1)
    # A poller run starts another page only with at least this many seconds left before the function's
    # timeout, beyond twice its slowest page so far: a page once claimed always finishes.
    poller_margin_seconds: int = Field(30, ge=0)
    poll_shards: int = Field(1, ge=1, le=32)
    callback_url: str | None = None
    webhook_enabled: bool = False
    # Name of the Secrets Manager secret holding the webhook signing secret (not the secret itself).
    webhook_secret: str | None = None
    # Set in stepfunctions mode: ingest starts one execution per job, named by the job id.
    state_machine_arn: str | None = None
    event_bus_name: str | None = "default"
    result_ttl_days: int = Field(30, ge=1)
    secret_max_age_seconds: int = Field(300, ge=0)
    # How long a submit claim holds: longer than the ingest function's timeout, so a claim that
    # expires belongs to a submitter that is certainly gone (crashed, timed out, out of memory).
    submit_lease_seconds: int = Field(180, ge=1)
    # A rate limit makes work wait, never fail: a job that still could not be started this long after it
    # was received fails with the last reason (an outage of VLM Run or of our credentials, not a 429 burst).
    submit_deadline_seconds: int = Field(86400, ge=60)
    # With webhooks: after an ambiguous submit, how long to wait for a signed callback that proves
    # which execution is ours before submitting again (the only evidence the API offers).
    evidence_window_seconds: int = Field(900, ge=0)
    # A job that reached a terminal status and is still not delivered this long after is delivered
    # by the sweeper (the stream record was lost, or delivery kept failing).
    delivery_grace_seconds: int = Field(300, ge=1)
    # stepfunctions mode: the scheduled sweeper takes over in-flight jobs whose next poll is this much
    # overdue (their state machine is gone): it is added to the row's next_poll_at, which the state machine
    # subtracts again. 0 in schedule mode, where the sweeper is the poller.
    sweep_overdue_seconds: int = Field(0, ge=0)
    vlmrun_timeout_seconds: float = Field(15.0, gt=0)
    # How long a poller run's claim on a job lasts: longer than one run can take.
    poll_claim_seconds: int = Field(120, ge=1)
    polling_mode: Literal["schedule", "stepfunctions"] = "schedule"
    # The largest artifact (or upload-mode input) vlmwatch moves; both are streamed, never held whole.
    max_object_bytes: int = Field(5 * 1024**3, ge=1)
    # The deployment's VLM Run request budget (starts and polls), shared by every function; 0 = none.
    requests_per_minute: int = Field(0, ge=0)
    # The budget's window: 60 s ("per minute"); shorter only to compress time in benchmarks and tests.
    budget_window_seconds: int = Field(60, ge=1)
    # With at least this many in-flight jobs due in one poller run, one executions-list request tells which
    # are still running (no GET for them); 0 = always one GET per job.
    list_poll_min_jobs: int = Field(5, ge=0)
    # Executions in flight at VLM Run at once, for the deployment (a plan's concurrency limit); 0 = no cap.
    max_in_flight: int = Field(0, ge=0)
    # Credits a calendar month (UTC) may use; reaching it opens the breaker with reason "budget". 0 = no cap.
    monthly_credit_budget: float = Field(0, ge=0)
    # The account's circuit breaker: this many 5xx / connection failures in a row (across all calls) open
    # it; while open, one probe per BREAKER_PROBE_SECONDS for the whole deployment; once it closes, intake
    # ramps back up over BREAKER_RAMP_SECONDS.
    breaker_failures: int = Field(5, ge=1)
    breaker_probe_seconds: int = Field(30, ge=1)
    breaker_ramp_seconds: int = Field(60, ge=0)
    # How long a function trusts the configuration version it read (`vlmwatch config push` takes effect
    # within this); one GetItem per process per interval.
    config_max_age_seconds: int = Field(60, ge=0)
    # The agents x-amz-meta-vlmrun-agent may name where a rule (or, when this is set, the default) opts
    # in; empty: only the agents the rules name.
    allowed_agents: frozenset[str] = frozenset()
    # The input keys this deployment processes (the EventBridge rule's filter, enforced again at ingest so
    # a backfill or a DLQ redrive cannot process other keys).
    input_prefix: str = ""
    input_suffix: str = ""
    # The most artifacts copied per result document (the rest are listed in missing_artifacts, with why).
    max_artifacts: int = Field(100, ge=0)
    # Hosts a presigned upload may PUT to besides VLM Run's domain and Google Cloud Storage.
    vlmrun_upload_hosts: tuple[str, ...] = ()

    @field_validator("routing_rules", mode="before")
    @classmethod
    def _rules_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return RuleSet.model_validate_json(value or "[]")
        if isinstance(value, list):
            return RuleSet.model_validate(value)
        return value

    @field_validator("default_json_schema", mode="before")
    @classmethod
    def _schema_from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("vlmrun_upload_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("allowed_agents", mode="before")
    @classmethod
    def _agent_list(cls, value: Any) -> Any:
        return parse_agent_list(value)

    @field_validator("vlmrun_base_url")
    @classmethod
    def _https_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        host = parts.hostname or ""
        if parts.scheme == "http" and (host in _LOCAL_HOSTS or host.endswith(".localhost")):
            return value  # the local emulator (".localhost" names resolve to this machine only, RFC 6761)
        raise ValueError(f"must be an https:// URL (plain http only for localhost), got {value[:100]!r}")

    def accepts_key(self, key: str) -> bool:
        """Whether an input key is one this deployment processes (``INPUT_PREFIX`` / ``INPUT_SUFFIX``): what
        the EventBridge rule's ``wildcard: <prefix>*<suffix>`` matches."""
        prefix, suffix = self.input_prefix, self.input_suffix
        return len(key) >= len(prefix) + len(suffix) and key.startswith(prefix) and key.endswith(suffix)

    @field_validator("output_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # Both may be set (the template ships a default prompt): the agent wins, see default_route.
        if self.poll_cap_seconds < self.poll_base_seconds:
            raise ValueError("POLL_CAP_SECONDS must be >= POLL_BASE_SECONDS")
        return self

    def default_route(self) -> Route | None:
        """What runs on an object no rule matches: the default agent (it wins), else the default prompt."""
        if self.default_agent:
            return Route(rule="default", agent=self.default_agent, model=self.model)
        if self.default_prompt:
            return Route(
                rule="default", prompt=self.default_prompt, json_schema=self.default_json_schema, model=self.model
            )
        return None

    @property
    def webhooks_enabled(self) -> bool:
        return self.webhook_enabled or bool(self.callback_url)

    @property
    def ambiguous_wait_seconds(self) -> int:
        """How long an ambiguous submit waits for evidence: only a callback can bring it."""
        return self.evidence_window_seconds if self.webhooks_enabled else 0

    @property
    def first_poll_seconds(self) -> int:
        """The first poll delay; with webhooks on, polling is only a slow safety net."""
        if self.webhooks_enabled:
            return max(self.poll_base_seconds, min(self.poll_cap_seconds, WEBHOOK_SAFETY_NET_SECONDS))
        return self.poll_base_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; empty values count as unset.

        Raises:
            ConfigError: naming every variable that does not validate.
        """
        data = {field: env[name] for name, field in _ENV.items() if env.get(name, "") != ""}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            reverse = {field: name for name, field in _ENV.items()}
            problems = "; ".join(
                f"{reverse.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else 'settings'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid vlmwatch configuration: {problems}") from exc
