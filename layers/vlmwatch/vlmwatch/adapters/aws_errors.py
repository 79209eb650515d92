"""AWS error codes, read one way. Every ``ClientError`` vlmwatch handles is classified here.

S3 answers a HEAD with a status code only (``404``, ``403``, ``400`` for a malformed version id), the
other APIs with names (``NoSuchKey``, ``ResourceNotFoundException``, ``AccessDeniedException``):
each kind below lists every spelling, so a caller asks "was it not found?", never "was it '404'?".
"""

from __future__ import annotations

from enum import StrEnum

from botocore.exceptions import ClientError


class AwsErrorKind(StrEnum):
    CONDITION_FAILED = "condition_failed"  # a conditional write lost: a race, not a fault
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"  # IAM, a bucket policy, a KMS key; or S3's 403 for a missing key
    INVALID = "invalid"  # the request is malformed (S3's bare 400 on a HEAD of a bad version id)
    ALREADY_EXISTS = "already_exists"
    THROTTLED = "throttled"
    OTHER = "other"


_KINDS: dict[str, AwsErrorKind] = {
    "ConditionalCheckFailedException": AwsErrorKind.CONDITION_FAILED,
    **dict.fromkeys(
        (
            *("404", "NoSuchKey", "NotFound", "NoSuchVersion", "NoSuchBucket", "ResourceNotFoundException"),
            # Step Functions: the task a token stood for is over (timed out, completed, stopped) or never was.
            *("TaskTimedOut", "TaskDoesNotExist", "InvalidToken"),
        ),
        AwsErrorKind.NOT_FOUND,
    ),
    **dict.fromkeys(
        ("403", "AccessDenied", "Forbidden", "AccessDeniedException", "DecryptionFailure", "KMSAccessDeniedException"),
        AwsErrorKind.ACCESS_DENIED,
    ),
    # DynamoDB's ValidationException: a malformed request, or (for a well-formed query) an index the table lacks.
    **dict.fromkeys(("400", "InvalidRequestException", "InvalidArgument", "ValidationException"), AwsErrorKind.INVALID),
    **dict.fromkeys(("ExecutionAlreadyExists", "ResourceInUseException"), AwsErrorKind.ALREADY_EXISTS),
    **dict.fromkeys(
        (
            "ThrottlingException",
            "Throttling",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "SlowDown",
            "503",
        ),
        AwsErrorKind.THROTTLED,
    ),
}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: ClientError) -> AwsErrorKind:
    return _KINDS.get(error_code(exc), AwsErrorKind.OTHER)


def is_kind(exc: BaseException, *kinds: AwsErrorKind) -> bool:
    """True when ``exc`` is a ``ClientError`` of one of ``kinds``."""
    return isinstance(exc, ClientError) and classify(exc) in kinds
