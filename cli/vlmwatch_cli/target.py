"""Which deployment the CLI talks to: one variable names it.

``VLMWATCH_STACK`` (or ``--stack``) is either a CloudFormation stack name, whose outputs give every name
(buckets, table, queue URLs), or the path of a stack env file (``make up`` writes one for the local
stack: endpoint, credentials and names). ``VLMWATCH_*`` variables and the explicit options override single
names. Endpoints otherwise follow boto3's own settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``), so the same commands work against AWS and the local stack unchanged.

A name is required only by the commands that use it (:meth:`Target.need`): ``list`` needs the table and
nothing else.
"""

from __future__ import annotations

import functools
import os
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import error_code
from vlmwatch_cli.errors import TargetError

# Stack output -> Target field.
_OUTPUTS = {
    "InputBucketName": "input_bucket",
    "OutputBucketName": "output_bucket",
    "JobsTableName": "table",
    "IngestQueueUrl": "ingest_queue_url",
    "IngestDeadLetterQueueUrl": "dlq_url",
    "FailedDeliveriesQueueUrl": "failed_deliveries_url",
    "OutputPrefix": "output_prefix",
}
ENV_PREFIX = "VLMWATCH_"
# What a stack env file may set besides the VLMWATCH_* names: how to reach AWS (or the local stack).
_SESSION_VARIABLES = {
    "AWS_ENDPOINT_URL": "endpoint_url",
    "AWS_DEFAULT_REGION": "region",
    "AWS_REGION": "region",
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_PROFILE": "profile",
}
_FLAGS = {
    "input_bucket": "--input-bucket",
    "output_bucket": "--output-bucket",
    "table": "--table",
    "ingest_queue_url": "--ingest-queue-url",
    "dlq_url": "--dlq-url",
    "failed_deliveries_url": "--failed-deliveries-url",
}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` or ``export KEY=value`` lines (shell quoting allowed, ``#`` comments ignored)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        words = shlex.split(raw, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep and name:
                values[name] = value
    return values


def _is_env_file(stack: str) -> bool:
    # A CloudFormation stack name is letters, digits and hyphens: anything with a slash or a dot is a path.
    return "/" in stack or "." in stack or Path(stack).is_file()


@dataclass
class Target:
    """Names of one deployment's resources, and how to reach them."""

    input_bucket: str = ""
    output_bucket: str = ""
    table: str = ""
    ingest_queue_url: str = ""
    dlq_url: str = ""
    failed_deliveries_url: str = ""
    output_prefix: str = "results/"
    stack: str = ""
    session_settings: dict[str, str] = field(default_factory=dict, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def resolve(cls, stack: str | None = None, **explicit: str | None) -> Target:
        """From ``stack`` (a stack's outputs, or a stack env file), then ``VLMWATCH_*`` environment
        variables, then ``explicit`` values (highest precedence). Nothing is required yet: see :meth:`need`.

        Raises:
            TargetError: the env file does not exist.
            botocore errors: the stack cannot be read (the CLI's error path says what to check).
        """
        values: dict[str, Any] = {"stack": stack or ""}
        session: dict[str, str] = {}
        names = {f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "session_settings"}
        if stack and _is_env_file(stack):
            path = Path(stack).expanduser()
            if not path.is_file():
                raise TargetError(f"no stack env file {stack}: run `make up` (it writes one), or name a stack")
            for name, value in read_env_file(path).items():
                if name in _SESSION_VARIABLES:
                    session[_SESSION_VARIABLES[name]] = value
                elif name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() in names - {"stack"}:
                    values[name[len(ENV_PREFIX) :].lower()] = value
        target = cls(session_settings=session)
        if stack and not _is_env_file(stack):
            try:
                described = target.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
            except ClientError as exc:
                if error_code(exc) != "ValidationError":
                    raise  # access, credentials, throttling: the CLI's error path says what to check
                region = target.client("cloudformation").meta.region_name
                raise TargetError(
                    f"cannot read stack {stack!r}: no such stack in {region}; check the name and the region"
                ) from exc
            for output in described.get("Outputs", []):
                wanted = _OUTPUTS.get(output["OutputKey"])
                if wanted:
                    values[wanted] = output["OutputValue"]
        for name in names - {"stack"}:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env:
                values[name] = env
        values.update({k: v for k, v in explicit.items() if v})
        for name, value in values.items():
            setattr(target, name, value)
        return target

    def need(self, *names: str) -> Target:
        """Check that this command's names are known; says what to pass for the missing ones."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            flags = ", ".join(f"{_FLAGS.get(m, m)} (or {ENV_PREFIX}{m.upper()})" for m in missing)
            raise TargetError(
                f"which deployment? set VLMWATCH_STACK (a stack name or `make up`'s env file), or {flags}"
            )
        return self

    @functools.cached_property
    def _session(self) -> boto3.Session:
        s = self.session_settings
        if not s:
            return boto3.Session()
        return boto3.Session(
            aws_access_key_id=s.get("access_key_id"),
            aws_secret_access_key=s.get("secret_access_key"),
            aws_session_token=s.get("session_token"),
            region_name=s.get("region"),
            profile_name=s.get("profile"),
        )

    def client(self, service: str) -> Any:
        if service not in self._clients:
            endpoint = self.session_settings.get("endpoint_url")
            self._clients[service] = self._session.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]
        return self._clients[service]

    @functools.cached_property
    def store(self) -> Any:
        from vlmwatch.adapters.jobstore import JobStore

        return JobStore(self.need("table").client("dynamodb"), self.table)

    @functools.cached_property
    def queries(self) -> Any:
        from vlmwatch.adapters.job_queries import JobQueries

        return JobQueries(self.need("table").client("dynamodb"), self.table)

    @functools.cached_property
    def breaker(self) -> Any:
        from vlmwatch.adapters.breaker import CircuitBreaker

        # Fresh reads only (refresh 0): an operator wants the row as it is, not a cached copy.
        return CircuitBreaker(self.need("table").client("dynamodb"), self.table, refresh_seconds=0)


__all__ = ["Target", "TargetError", "read_env_file"]
