"""One error path for every command: what failed and what to check, on one line, exit 2.

AWS (a ``ClientError``, missing or expired credentials, an endpoint that does not answer), VLM Run and
the operator's own input (:class:`UsageError`) all end here. ``--debug`` (or ``VLMWATCH_DEBUG=1``) lets
the traceback through instead. Anything else is a bug and keeps its traceback.

Exit statuses, for every command: 0 everything was done as asked; 1 some of the work failed (a job that
could not be retried, a file that did not upload, a wait that timed out); 2 nothing could be done as asked
(bad input, no such deployment, AWS or VLM Run refused).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from typing import Any

import typer
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from typer import _click
from typer.core import TyperGroup
from typer.exceptions import TyperException

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify, error_code
from vlmwatch.core.errors import VlmRunError, VlmwatchError
from vlmwatch_cli import show

EXIT_OK, EXIT_PARTIAL, EXIT_NOTHING = 0, 1, 2

_CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "RequestExpired",
    "InvalidToken",
    "TokenRefreshRequired",
}


class UsageError(Exception):
    """What the operator asked cannot be done as asked (a bad name, filter or value): one line, exit 2."""


class TargetError(UsageError):
    """The deployment cannot be found or is not fully named; the message says what to pass."""


_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


# Where the command was talking to, as the deployment was resolved (a stack env file may set its own).
reaching: ContextVar[dict[str, str]] = ContextVar("reaching", default={})  # noqa: B039 - read-only default


def _where() -> str:
    settings = reaching.get()
    profile = settings.get("profile") or os.environ.get("AWS_PROFILE") or "default"
    region = settings.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "not set"
    endpoint = settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    return f"profile {profile}, region {region}" + (f", endpoint {endpoint}" if endpoint else "")


def _client_error(exc: ClientError) -> str:
    operation = exc.operation_name or "the request"
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or code
    # A JSON API's error that came back as an XML body (a 403 from a proxy or an IAM layer): read its parts.
    inner_code, inner_message = _XML_CODE.search(message), _XML_MESSAGE.search(message)
    if inner_code and inner_message:
        code, message = inner_code.group(1), inner_message.group(1)
    said = f"AWS refused {operation}: {code}: {message}"
    if code in _CREDENTIAL_CODES:
        return f"{said}; check the credentials ({_where()}): refresh them (aws sso login, new keys)"
    kind = classify(exc)
    if kind == AwsErrorKind.ACCESS_DENIED:
        return f"{said}; check that the identity in use ({_where()}) is allowed {operation} on that resource"
    if kind == AwsErrorKind.NOT_FOUND or code in ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"):
        return (
            f"{said}; check the name (--stack, --table, --input-bucket or the VLMWATCH_* variables) "
            f"and the region ({_where()})"
        )
    if kind == AwsErrorKind.THROTTLED:
        return f"{said}; AWS is throttling this account: try again in a moment, or with a smaller --limit"
    if code == "ValidationError" and operation == "DescribeStacks":
        return f"{said}; check the stack name and the region ({_where()})"
    return f"{said} ({_where()})"


def describe(exc: BaseException) -> str | None:
    """The one line an operator sees for ``exc``; None for an exception that is a bug (keep its traceback)."""
    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        return _client_error(exc.__context__)  # the transfer manager's wrapper: say what S3 said
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no usable AWS credentials ({_where()}): set AWS_PROFILE, run aws sso login or aws configure"
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (or a region in the profile)"
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check AWS_PROFILE against ~/.aws/config"
    if isinstance(exc, EndpointConnectionError):
        endpoint = exc.kwargs.get("endpoint_url")
        if reaching.get().get("endpoint_url"):  # from a stack env file: the local stack it names has stopped
            return f"cannot reach {endpoint}, the endpoint in VLMWATCH_STACK's env file: is `make up` still running?"
        return f"cannot reach AWS at {endpoint}: check the region and AWS_ENDPOINT_URL"
    if isinstance(exc, BotoCoreError):
        return f"AWS request failed: {exc} ({_where()})"
    if isinstance(exc, VlmRunError):
        return f"VLM Run: {exc}"
    if isinstance(exc, VlmwatchError):  # a configuration that does not validate, a secret that cannot be read
        return str(exc)
    return None


class Group(TyperGroup):
    """The ``vlmwatch`` command group: every command's errors go through :func:`describe`."""

    def invoke(self, ctx: _click.Context) -> Any:
        show.fit_terminal()
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise  # usage errors (exit 2), exits and aborts: typer says them itself
        except Exception as exc:
            message = describe(exc)
            if message is None or (ctx.obj or {}).get("debug"):
                raise
            show.warn(message)
            raise typer.Exit(EXIT_NOTHING) from exc
