"""The CLI's one error path and its safe printing, case by case (what an operator reads)."""

from __future__ import annotations

from botocore.exceptions import ClientError, NoCredentialsError

from vlmwatch.core.errors import ConfigError, VlmRunRejectedError
from vlmwatch_cli.errors import UsageError, describe
from vlmwatch_cli.show import clean


def client_error(code: str, message: str, operation: str = "Query") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def test_each_aws_error_says_what_to_check():
    assert "is allowed Query on that resource" in describe(client_error("AccessDeniedException", "no"))  # type: ignore[operator]
    assert "check the credentials" in describe(client_error("ExpiredTokenException", "expired"))  # type: ignore[operator]
    assert "throttling" in describe(client_error("ProvisionedThroughputExceededException", "slow"))  # type: ignore[operator]
    assert "check the name" in describe(client_error("QueueDoesNotExist", "gone", "ReceiveMessage"))  # type: ignore[operator]
    assert "aws sso login" in describe(NoCredentialsError())  # type: ignore[operator]


def test_vlm_run_errors_are_labelled_and_other_library_errors_are_not():
    assert describe(VlmRunRejectedError("unknown agent")) == "VLM Run: unknown agent"
    assert describe(ConfigError("rule 'x': bad agent")) == "rule 'x': bad agent"
    assert describe(UsageError("bad --limit")) == "bad --limit"


def test_a_bug_keeps_its_traceback():
    assert describe(KeyError("job_id")) is None


def test_control_characters_become_visible_escapes():
    assert clean("a\x1b[2Jb\x9b\u202e\n") == "a\\x1b[2Jb\\x9b\\u202e\\x0a"
    assert clean("plain/ünïcode [bold]") == "plain/ünïcode [bold]"
