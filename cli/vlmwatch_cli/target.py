"""Which deployment the CLI talks to: a CloudFormation stack's outputs, or names given explicitly.

Endpoints follow boto3's own settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``), so
the same commands work against AWS and against the local stack (moto) unchanged.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, fields
from typing import Any

import boto3

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


class TargetError(Exception):
    """The deployment cannot be found or is not fully named; the message says what to pass."""


@dataclass
class Target:
    """Names of one deployment's resources."""

    input_bucket: str = ""
    output_bucket: str = ""
    table: str = ""
    ingest_queue_url: str = ""
    dlq_url: str = ""
    failed_deliveries_url: str = ""
    output_prefix: str = "results/"
    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def resolve(cls, stack: str | None = None, **explicit: str | None) -> Target:
        """From ``stack`` (CloudFormation outputs), then ``VLMWATCH_*`` environment variables, then
        ``explicit`` values (highest precedence).

        Raises:
            TargetError: the stack does not exist, or a required name is still missing.
        """
        values: dict[str, Any] = {}
        if stack:
            try:
                described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
            except Exception as exc:
                raise TargetError(f"cannot read stack {stack!r}: {exc}") from exc
            for output in described.get("Outputs", []):
                name = _OUTPUTS.get(output["OutputKey"])
                if name:
                    values[name] = output["OutputValue"]
        for f in fields(cls):
            env = os.environ.get(ENV_PREFIX + f.name.upper())
            if env is not None and not f.name.startswith("_"):
                values[f.name] = env
        values.update({k: v for k, v in explicit.items() if v is not None})
        target = cls(**values)
        missing = [name for name in ("input_bucket", "output_bucket", "table") if not getattr(target, name)]
        if missing:
            flags = ", ".join(f"--{m.replace('_', '-')} (or {ENV_PREFIX}{m.upper()})" for m in missing)
            raise TargetError(f"which deployment? pass --stack NAME, or {flags}")
        return target

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(service)  # type: ignore[call-overload]
        return self._clients[service]

    @functools.cached_property
    def store(self) -> Any:
        from vlmwatch.adapters.jobstore import JobStore

        return JobStore(self.client("dynamodb"), self.table)

    @functools.cached_property
    def breaker(self) -> Any:
        from vlmwatch.adapters.breaker import CircuitBreaker

        # Fresh reads only (refresh 0): an operator wants the row as it is, not a cached copy.
        return CircuitBreaker(self.client("dynamodb"), self.table, refresh_seconds=0)
