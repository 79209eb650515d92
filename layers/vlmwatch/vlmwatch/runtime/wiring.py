"""Process-wide wiring (the composition root): settings, the clock, AWS clients and the VLM Run client,
each built once on first use and reused across invocations. Tests call :func:`reset` or :func:`use`.

Each part is imported where it is built: a handler imports only the modules it uses (the webhook never
loads delivery, the ingest never loads the poller), which keeps every function's cold start short.
Every part is declared with :func:`part`, so :func:`reset` forgets them all without a list to keep.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.core.redact import install_log_redaction
from vlmwatch.core.settings import Settings

if TYPE_CHECKING:
    import httpx

    from vlmwatch.adapters.breaker import CircuitBreaker
    from vlmwatch.adapters.config_store import ConfigSource
    from vlmwatch.adapters.job_events import JobEvents
    from vlmwatch.adapters.ledger import CreditLedger
    from vlmwatch.adapters.outputs import OutputWriter
    from vlmwatch.adapters.s3source import SourceReader
    from vlmwatch.adapters.secrets import SecretStore
    from vlmwatch.adapters.slots import InFlightSlots
    from vlmwatch.adapters.statemachine import PollerStateMachine
    from vlmwatch.adapters.throttle import Backpressure
    from vlmwatch.adapters.vlmrun.client import VlmRunClient
    from vlmwatch.core.identity import ObjectVersion
    from vlmwatch.flows.delivery import Deliverer
    from vlmwatch.flows.ingest import Ingestor
    from vlmwatch.flows.steploop import StepLoop
    from vlmwatch.flows.submit import Submitter
    from vlmwatch.flows.sweeper import Sweeper
    from vlmwatch.flows.tracking import Tracker
    from vlmwatch.flows.webhooks import WebhookReceiver

_overrides: dict[str, Any] = {}
_parts: list[Any] = []
_reset_hooks: list[Callable[[], None]] = []

# Before any client exists: no log line from any library may carry a secret or a signed URL.
install_log_redaction()


def part[F: Callable[..., Any]](factory: F) -> F:
    """Declare a process-wide part: built on first use, then cached until :func:`reset`."""
    cached = functools.cache(factory)
    _parts.append(cached)
    return cached  # type: ignore[return-value]


def on_reset(hook: Callable[[], None]) -> None:
    """Run ``hook`` on every :func:`reset` (per-process state kept outside the parts, e.g. metric counters)."""
    _reset_hooks.append(hook)


def use(
    *,
    settings: Settings | None = None,
    transport: httpx.BaseTransport | None = None,
    api_key: str | None = None,
    clock: Callable[[], float] | None = None,
    stepfunctions: Any = None,
) -> None:
    """Inject parts (tests, the local runner) and drop everything built so far. ``stepfunctions`` stands in
    for the Step Functions client (the local stack's state machines)."""
    reset()
    given = {
        "settings": settings,
        "transport": transport,
        "api_key": api_key,
        "clock": clock,
        "stepfunctions": stepfunctions,
    }
    _overrides.update({k: v for k, v in given.items() if v is not None})


def reset() -> None:
    """Forget every cached object (and overrides), as a fresh Lambda container would."""
    _overrides.clear()
    for cached in _parts:
        cached.cache_clear()
    for hook in _reset_hooks:
        hook()


def clock() -> float:
    """Seconds since the epoch: the one clock every part reads (tests and the local runner move it)."""
    override = _overrides.get("clock")
    return override() if override else time.time()


def is_built(factory: Any) -> bool:
    """Whether a part has been built in this process (metrics report nothing for what never ran)."""
    return bool(factory.cache_info().currsize)


@part
def settings() -> Settings:
    return _overrides.get("settings") or Settings.from_env(os.environ)


@part
def _session() -> Any:
    # botocore, not boto3: boto3's import pulls in s3transfer (~180 ms of cold start) for nothing we use.
    # Imported here, with the first client: a handler's import stays light (Lambda's init timer runs on it).
    import botocore.session

    return botocore.session.get_session()


@part
def _boto(service: str) -> Any:
    """One client per service per process (clients are thread-safe; building one costs more than a call)."""
    return _session().create_client(service)


@part
def s3() -> Any:
    # SigV4 explicitly: presigned URLs must work in every region (botocore may still pick SigV2 for them).
    from botocore.config import Config

    return _session().create_client("s3", config=Config(signature_version="s3v4"))


@part
def job_store() -> JobStore:
    cfg = settings()
    return JobStore(
        _boto("dynamodb"),
        cfg.jobs_table,
        shards=cfg.poll_shards,
        ttl_days=cfg.result_ttl_days,
        delivery_grace_seconds=cfg.delivery_grace_seconds,
        clock=clock,
    )


@part
def source_reader() -> SourceReader:
    from vlmwatch.adapters.s3source import SourceReader

    return SourceReader(s3())


@part
def secret_store() -> SecretStore:
    from vlmwatch.adapters.secrets import SecretStore

    # The one path every secret is read through: cached for SECRET_MAX_AGE_SECONDS, current and previous.
    return SecretStore(lambda: _boto("secretsmanager"), max_age=settings().secret_max_age_seconds, clock=clock)


def api_key(refresh: bool = False) -> str:
    """The VLM Run API key; ``refresh`` after a 401 (a rotated key)."""
    if "api_key" in _overrides:
        return str(_overrides["api_key"])
    return secret_store().get(settings().api_key_secret, refresh=refresh)


def webhook_secret() -> str:
    """The current webhook signing secret (callback tokens are made with it); "" when none is configured."""
    name = settings().webhook_secret
    return secret_store().get(name) if name else ""


def webhook_secrets() -> list[str]:
    """Every webhook secret a callback may be signed with: current, then previous during a rotation.

    Raises:
        SecretUnavailableError: the secret is configured but cannot be read (cached: one call per max age).
    """
    name = settings().webhook_secret
    return secret_store().candidates(name) if name else []


@part
def vlmrun_client() -> VlmRunClient:
    import httpx

    from vlmwatch.adapters.vlmrun.client import VlmRunClient

    cfg = settings()
    timeout = httpx.Timeout(cfg.vlmrun_timeout_seconds, connect=min(3.0, cfg.vlmrun_timeout_seconds))
    return VlmRunClient(
        cfg.vlmrun_base_url,
        api_key,
        timeout=timeout,
        transport=_overrides.get("transport"),
        observer=breaker(),
        # Every request it sends (artifacts, uploads, retries too) counts against RequestsPerMinute.
        gate=pressure(),
        upload_hosts=cfg.vlmrun_upload_hosts,
    )


@part
def breaker() -> CircuitBreaker:
    from vlmwatch.adapters.breaker import CircuitBreaker

    cfg = settings()
    return CircuitBreaker(
        _boto("dynamodb"),
        cfg.jobs_table,
        failures_to_open=cfg.breaker_failures,
        probe_seconds=cfg.breaker_probe_seconds,
        ramp_seconds=cfg.breaker_ramp_seconds,
        clock=clock,
    )


@part
def ledger() -> CreditLedger:
    from vlmwatch.adapters.ledger import CreditLedger

    cfg = settings()
    return CreditLedger(
        _boto("dynamodb"), cfg.jobs_table, monthly_budget=cfg.monthly_credit_budget, breaker=breaker(), clock=clock
    )


@part
def config_source() -> ConfigSource:
    """The configuration version in effect (``vlmwatch config push``), or the template's parameters (v0)."""
    from vlmwatch.adapters.config_store import ConfigSource
    from vlmwatch.core.config import from_parameters

    cfg = settings()
    fallback = from_parameters(cfg.routing_rules, cfg.default_route())
    # Virtual time in tests and benchmarks: the cached "nothing pushed" answer ages with their clock.
    return ConfigSource(_boto("dynamodb"), cfg.jobs_table, fallback, max_age=cfg.config_max_age_seconds, clock=clock)


@part
def slots() -> InFlightSlots:
    from vlmwatch.adapters.slots import InFlightSlots

    cfg = settings()
    return InFlightSlots(
        _boto("dynamodb") if cfg.max_in_flight else None, cfg.jobs_table, cfg.max_in_flight, clock=clock
    )


@part
def pressure() -> Backpressure:
    from vlmwatch.adapters.throttle import Backpressure, RequestBudget

    cfg = settings()
    budget = None
    if cfg.requests_per_minute:
        budget = RequestBudget(
            _boto("dynamodb"),
            cfg.jobs_table,
            cfg.requests_per_minute,
            window_seconds=cfg.budget_window_seconds,
            clock=clock,
        )
    return Backpressure(clock=clock, budget=budget, breaker=breaker())


@part
def job_events() -> JobEvents:
    from vlmwatch.adapters.job_events import JobEvents

    return JobEvents(lambda: _boto("events"), settings().event_bus_name)


@part
def submitter() -> Submitter:
    from vlmwatch.flows.request import RequestBuilder
    from vlmwatch.flows.submit import Submitter

    cfg = settings()
    requests = RequestBuilder(
        cfg, job_store(), s3(), vlmrun_client, webhook_secret=webhook_secret if cfg.callback_url else None
    )
    return Submitter(
        cfg,
        job_store(),
        requests,
        vlmrun_client,
        pressure(),
        events=job_events(),
        state_machine=state_machine(),
        slots=slots(),
    )


@part
def output_writer() -> OutputWriter:
    from vlmwatch.adapters.outputs import OutputWriter

    cfg = settings()
    return OutputWriter(s3(), cfg.output_bucket, cfg.output_prefix)


@part
def ingestor() -> Ingestor:
    from vlmwatch.flows.ingest import Ingestor

    config = config_source()
    cfg = settings()

    def written(key: str, version: ObjectVersion, run: int) -> bool:
        # Imported when first asked (only for a version older than the rows' TTL): ingest's cold start stays small.
        from vlmwatch.adapters.outputs import run_written
        from vlmwatch.core.layout import OutputLayout

        return run_written(s3(), OutputLayout(cfg.output_bucket, cfg.output_prefix), key, version, run)

    return Ingestor(
        cfg, job_store(), source_reader(), submitter(), config=config.current, config_at=config.version, written=written
    )


@part
def tracker() -> Tracker:
    from vlmwatch.flows.tracking import Tracker

    return Tracker(settings(), job_store(), vlmrun_client, breaker=breaker(), slots=slots())


@part
def sweeper() -> Sweeper:
    from vlmwatch.flows.sweeper import Sweeper

    return Sweeper(settings(), job_store(), tracker(), vlmrun_client, submitter(), pressure(), deliverer, slots=slots())


@part
def state_machine() -> PollerStateMachine:
    from vlmwatch.adapters.statemachine import PollerStateMachine

    # The local stack plays Step Functions in-process (as the emulator plays VLM Run): injected by use().
    return PollerStateMachine(
        lambda: _overrides.get("stepfunctions") or _boto("stepfunctions"), settings().state_machine_arn
    )


@part
def step_loop() -> StepLoop:
    from vlmwatch.flows.steploop import StepLoop

    return StepLoop(settings(), job_store(), tracker(), pressure(), state_machine())


@part
def webhook_receiver() -> WebhookReceiver:
    from vlmwatch.flows.webhooks import WebhookReceiver

    return WebhookReceiver(webhook_secrets, job_store(), tracker(), vlmrun_client, submitter())


@part
def deliverer() -> Deliverer:
    from vlmwatch.flows.delivery import Deliverer

    cfg = settings()
    return Deliverer(
        job_store(),
        output_writer(),
        vlmrun_client,
        job_events(),
        source=source_reader(),
        breaker=breaker(),
        ledger=ledger(),
        retry_seconds=max(1, cfg.delivery_grace_seconds // 5),
        max_bytes=cfg.max_object_bytes,
        pressure=pressure(),
        max_artifacts=cfg.max_artifacts,
    )
