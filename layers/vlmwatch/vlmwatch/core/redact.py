"""Keep credentials out of everything vlmwatch stores or emits.

Two nets, one job each:

* :func:`sanitize` cleans *remote text* (VLM Run's error messages, exception strings) before it goes on
  a job row, into an error document, an event or a log line: query strings are stripped from every URL
  (a presigned S3 URL quoted in a fetch error carries a live ``X-Amz-Signature``), stray signature
  parameters are masked, and the length is bounded.
* :func:`install_log_redaction` is the last net for what we do not control (botocore at DEBUG logs the
  ``GetSecretValue`` response body): a log-record factory masks every registered secret value and every
  signature parameter in every record, whichever logger or handler writes it. Records below a logger's
  level are never built, so the net costs nothing for disabled DEBUG lines.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MAX_TEXT_CHARS = 4000
REDACTED = "<redacted>"

# A URL's query (and fragment) is where credentials live: presigned S3 URLs, tokens, signatures.
# The scheme is bounded and must start a word: the scan stays linear on a megabyte of letters.
_URL_QUERY = re.compile(r"""(?P<base>\b[a-zA-Z][a-zA-Z0-9+.-]{0,15}://[^\s"'<>?#]+)[?#][^\s"'<>]*""")
# Signature-like parameters outside a recognisable URL (a header dump, a JSON-escaped URL).
_SIGNATURE_PARAM = re.compile(
    r"""(?P<name>X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId|x-amz-security-token|"""
    r"""token|sig)(?P<sep>=|%3D|":\s*")(?P<value>[^&\s"'<>\\]+)""",
    re.IGNORECASE,
)
# AWS session credentials that could appear in a dump (botocore DEBUG of an STS or Lambda env call).
_AWS_SECRET_FIELD = re.compile(
    r"""(?P<name>["']?(?:SecretString|SecretBinary|SecretAccessKey|SessionToken|aws_secret_access_key|"""
    r"""aws_session_token|Authorization)["']?\s*[:=]\s*["']?)(?P<value>[^"',}\s][^"',}]*)""",
    re.IGNORECASE,
)


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... [{len(text) - limit + 40} more characters cut]"


def strip_credentials(text: str) -> str:
    """``text`` with URL query strings removed and signature/credential values masked."""
    text = _URL_QUERY.sub(lambda m: f"{m.group('base')}?{REDACTED}", text)
    text = _SIGNATURE_PARAM.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    return _AWS_SECRET_FIELD.sub(lambda m: f"{m.group('name')}{REDACTED}", text)


def sanitize(text: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Remote text made safe to store and emit: bounded, then credentials stripped."""
    raw = str(text)
    if len(raw) <= limit:
        return truncate(strip_credentials(raw), limit)
    # Cut first (a 500 KB message costs no more than a short one), then strip what is kept.
    kept = strip_credentials(raw[: limit - 40])[: limit - 40]
    return f"{kept}... [{len(raw) - len(kept)} more characters cut]"


# -- logging --------------------------------------------------------------------------------------

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False
# Values this short would mask ordinary words; no real key or signing secret is this short.
_MIN_SECRET_CHARS = 8


def register_secret(value: str) -> None:
    """Mask ``value`` in every log record from now on (called by whatever reads a secret)."""
    if value and len(value) >= _MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    """What a log line may say: registered secrets and credentials masked."""
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return strip_credentials(text) if ("=" in text or ":" in text) else text


def _clean_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        return
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    for name, value in list(record.__dict__.items()):
        # ``extra`` keys (powertools' structured fields) sit on the record as attributes.
        if isinstance(value, str) and name not in _RECORD_FIELDS:
            cleaned = redact_text(value)
            if cleaned != value:
                setattr(record, name, cleaned)


def install_log_redaction() -> None:
    """Route every log record through :func:`redact_text` (idempotent, process-wide).

    ``Logger.makeRecord`` is wrapped rather than the record factory because ``extra`` fields are set on
    the record after the factory returns; every logger (botocore's, httpx's, powertools') builds its
    records there, and only for records its level lets through.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    original = logging.Logger.makeRecord

    def make_record(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = original(self, *args, **kwargs)
        _clean_record(record)
        return record

    logging.Logger.makeRecord = make_record  # type: ignore[method-assign]


_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
