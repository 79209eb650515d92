"""Process-wide wiring: settings, AWS clients and the VLM Run client, each built once on first use
and reused across invocations. Tests call :func:`reset` or :func:`use` to swap parts out.

Each part is imported where it is built: a handler imports only the modules it uses (the webhook never
loads delivery, the ingest never loads the poller), which keeps every function's cold start short.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmwatch.jobs import JobStore
from vlmwatch.redact import install_log_redaction
from vlmwatch.settings import Settings

if TYPE_CHECKING:
    import httpx

    from vlmwatch.delivery import Deliverer
    from vlmwatch.ingest import Ingestor
    from vlmwatch.notify import JobEvents
    from vlmwatch.output import OutputWriter
    from vlmwatch.pressure import Backpressure
    from vlmwatch.secret_store import SecretStore
    from vlmwatch.submit import Submitter
    from vlmwatch.tracking import Tracker
    from vlmwatch.vlmrun import VlmRunClient
    from vlmwatch.webhooks import WebhookReceiver

_overrides: dict[str, Any] = {}

# Before any client exists: no log line from any library may carry a secret or a signed URL.
install_log_redaction()


def use(
    *,
    settings: Settings | None = None,
    transport: httpx.BaseTransport | None = None,
    api_key: str | None = None,
    clock: Callable[[], float] | None = None,
) -> None:
    """Inject parts (tests, the local runner) and drop everything built so far."""
    reset()
    _overrides.update(
        {
            k: v
            for k, v in {"settings": settings, "transport": transport, "api_key": api_key, "clock": clock}.items()
            if v is not None
        }
    )


def reset() -> None:
    """Forget every cached object (and overrides), as a fresh Lambda container would."""
    _overrides.clear()
    _reported.update(requests=0, rate_limited=0)
    for fn in (
        settings,
        _session,
        _boto,
        s3,
        job_store,
        secret_store,
        job_events,
        vlmrun_client,
        webhook_receiver,
        ingestor,
        submitter,
        pressure,
        tracker,
        deliverer,
        output_writer,
    ):
        fn.cache_clear()


@functools.cache
def settings() -> Settings:
    return _overrides.get("settings") or Settings.from_env(os.environ)


@functools.cache
def _session() -> Any:
    # botocore, not boto3: boto3's import pulls in s3transfer (~180 ms of cold start) for nothing we use.
    # Imported here, with the first client: a handler's import stays light (Lambda's init timer runs on it).
    import botocore.session

    return botocore.session.get_session()


@functools.cache
def _boto(service: str) -> Any:
    """One client per service per process (clients are thread-safe; building one costs more than a call)."""
    return _session().create_client(service)


@functools.cache
def s3() -> Any:
    # SigV4 explicitly: presigned URLs must work in every region (botocore may still pick SigV2 for them).
    from botocore.config import Config

    return _session().create_client("s3", config=Config(signature_version="s3v4"))


@functools.cache
def job_store() -> JobStore:
    cfg = settings()
    return JobStore(
        _boto("dynamodb"),
        cfg.jobs_table,
        shards=cfg.poll_shards,
        ttl_days=cfg.result_ttl_days,
        delivery_grace_seconds=cfg.delivery_grace_seconds,
        **({"clock": _overrides["clock"]} if "clock" in _overrides else {}),
    )


@functools.cache
def secret_store() -> SecretStore:
    from vlmwatch.secret_store import SecretStore

    # The one path every secret is read through: cached for SECRET_MAX_AGE_SECONDS, current and previous.
    clock = _overrides.get("clock")
    return SecretStore(
        lambda: _boto("secretsmanager"),
        max_age=settings().secret_max_age_seconds,
        **({"clock": clock} if clock else {}),
    )


def api_key(refresh: bool = False) -> str:
    """The VLM Run API key; ``refresh`` after a 401 (a rotated key)."""
    if "api_key" in _overrides:
        return _overrides["api_key"]
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


@functools.cache
def webhook_receiver() -> WebhookReceiver:
    from vlmwatch.webhooks import WebhookReceiver

    return WebhookReceiver(webhook_secrets, job_store(), tracker(), vlmrun_client, submitter())


@functools.cache
def vlmrun_client() -> VlmRunClient:
    import httpx

    from vlmwatch.vlmrun import VlmRunClient

    cfg = settings()
    timeout = httpx.Timeout(cfg.vlmrun_timeout_seconds, connect=min(3.0, cfg.vlmrun_timeout_seconds))
    return VlmRunClient(cfg.vlmrun_base_url, api_key, timeout=timeout, transport=_overrides.get("transport"))


_reported = {"requests": 0, "rate_limited": 0}


def report_usage(metrics: Any) -> None:
    """Add this invocation's VLM Run requests and 429s to a powertools ``Metrics`` (per-process deltas).

    Nothing is built to report zero: a handler that never talked to VLM Run adds nothing.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    if vlmrun_client.cache_info().currsize:
        sent = vlmrun_client().requests_sent
        metrics.add_metric(name="VlmRunRequests", unit=MetricUnit.Count, value=sent - _reported["requests"])
        _reported["requests"] = sent
    if pressure.cache_info().currsize:
        hits = pressure().hits
        metrics.add_metric(name="VlmRunRateLimited", unit=MetricUnit.Count, value=hits - _reported["rate_limited"])
        _reported["rate_limited"] = hits


def route_library_logs(logger: Any, *, force: bool = False) -> None:
    """Send the ``vlmwatch.*`` loggers' lines through a handler's powertools ``Logger``.

    Without this they reach the root logger only: plain text in CloudWatch, without the keys the handler
    appended (``job_id``). With it they are JSON lines with the handler's level, keys and the logger name.
    Only in Lambda (or ``force``): elsewhere (tests, the local runner) the standard logging tree stays as is.
    """
    if not (force or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")):
        return
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("vlmwatch")  # registered before the copy looks for it
    copy_config_to_registered_loggers(source_logger=logger, include={"vlmwatch"})


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


@functools.cache
def pressure() -> Backpressure:
    from vlmwatch.budget import RequestBudget
    from vlmwatch.pressure import Backpressure

    cfg = settings()
    budget = None
    if cfg.requests_per_minute:
        budget = RequestBudget(
            _boto("dynamodb"),
            cfg.jobs_table,
            cfg.requests_per_minute,
            window_seconds=cfg.budget_window_seconds,
            clock=job_store().now,
        )
    return Backpressure(clock=job_store().now, budget=budget)


@functools.cache
def job_events() -> JobEvents:
    from vlmwatch.notify import JobEvents

    return JobEvents(lambda: _boto("events"), settings().event_bus_name)


@functools.cache
def submitter() -> Submitter:
    from vlmwatch.submit import Submitter

    cfg = settings()
    return Submitter(
        cfg,
        job_store(),
        s3(),
        vlmrun_client,
        pressure(),
        webhook_secret=webhook_secret if cfg.callback_url else None,
        sfn=lambda: _boto("stepfunctions"),
        events=job_events(),
    )


@functools.cache
def output_writer() -> OutputWriter:
    from vlmwatch.output import OutputWriter

    cfg = settings()
    return OutputWriter(s3(), cfg.output_bucket, cfg.output_prefix)


@functools.cache
def ingestor() -> Ingestor:
    from vlmwatch.ingest import Ingestor

    return Ingestor(settings(), job_store(), s3(), submitter())


@functools.cache
def tracker() -> Tracker:
    from vlmwatch.tracking import Tracker

    return Tracker(settings(), job_store(), vlmrun_client, submitter(), pressure(), deliverer)


@functools.cache
def deliverer() -> Deliverer:
    from vlmwatch.delivery import Deliverer

    cfg = settings()
    return Deliverer(
        job_store(),
        output_writer(),
        vlmrun_client,
        job_events(),
        source_s3=s3(),
        retry_seconds=max(1, cfg.delivery_grace_seconds // 5),
        max_bytes=cfg.max_object_bytes,
    )
