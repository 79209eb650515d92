"""Keep credentials out of everything vlmwatch stores or emits.

Two nets, one job each:

* :func:`sanitize` cleans *remote text* (VLM Run's error messages, exception strings) before it goes on
  a job row, into an error document, an event or a log line: query strings are stripped from every URL
  (a presigned S3 URL quoted in a fetch error carries a live ``X-Amz-Signature``), stray signature
  parameters are masked, and the length is bounded.
* :func:`install_log_redaction` is the last net for what we do not control (botocore at DEBUG logs the
  ``GetSecretValue`` response body): a log-record factory masks every registered secret value and every
  signature parameter in every record, whichever logger or handler writes it: the message, every
  ``extra`` field (strings, and dicts, lists and objects whole), and the traceback or stack a formatter
  renders. Records below a logger's level are never built, so the net costs nothing for disabled DEBUG lines.
"""

from __future__ import annotations

import contextlib
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


def strip_signed_urls(text: str) -> str:
    """``text`` with the query removed from every URL whose query carries a signature or credential (a
    presigned URL); other URLs, and the rest of the text, are kept as they are (extracted data stays intact)."""
    if "://" not in text:
        return text

    def strip(match: re.Match[str]) -> str:
        return f"{match.group('base')}?{REDACTED}" if _SIGNATURE_PARAM.search(match.group(0)) else match.group(0)

    return _URL_QUERY.sub(strip, text)


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
    if record.exc_info and isinstance(record.exc_info, tuple) and record.exc_info[1] is not None:
        _clean_exception(record.exc_info[1])
    for name, value in list(record.__dict__.items()):
        # ``extra`` keys (powertools' structured fields) sit on the record as attributes; a dict, a list or
        # an object there is printed whole (as JSON, or by str()), so it is cleaned whole.
        if name in _RECORD_FIELDS or value is None or isinstance(value, bool | int | float):
            continue
        cleaned = _redact_value(value)
        if cleaned is not value:
            setattr(record, name, cleaned)


def _clean_exception(exc: BaseException) -> None:
    """Mask secrets in a logged exception and its causes, in place.

    A structured formatter prints the exception object itself (powertools' ``stack_trace.value`` is
    ``str(exc)``), not only the rendered traceback: the message it carries is cleaned where it lives. The
    exception is the caller's, and may be raised again: it then carries the masked message too, which is
    what a Lambda error report should say anyway.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        try:
            text = str(current)
        except Exception:
            text = ""
        cleaned = redact_text(text)
        if cleaned != text:
            with contextlib.suppress(Exception):
                current.args = (cleaned,)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            current.__notes__ = [redact_text(str(note)) for note in notes]
        current = current.__cause__ or current.__context__


def _redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every registered secret and credential masked: the same object when nothing was."""
    if isinstance(value, str):
        cleaned = redact_text(value)
        return value if cleaned == value else cleaned
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 6 and isinstance(value, dict):
        items = [(_redact_value(k, depth + 1), _redact_value(v, depth + 1)) for k, v in value.items()]
        same = all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True))
        return value if same else dict(items)
    if depth < 6 and isinstance(value, list | tuple | set | frozenset):
        members = [_redact_value(v, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(members, value, strict=True)) else members
    # Anything else is printed by str(): clean that text (deeper than the bound, it is printed whole too).
    try:
        text = str(value)
    except Exception:
        return value
    cleaned = redact_text(text)
    return value if cleaned == text else cleaned


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

    # A traceback (``logger.exception``) and a stack are rendered by the formatter, after the record is
    # made: every formatter (powertools' JSON one included) renders them through these two methods.
    format_exception, format_stack = logging.Formatter.formatException, logging.Formatter.formatStack

    def redacted_exception(self: logging.Formatter, ei: Any) -> str:
        return redact_text(format_exception(self, ei))

    def redacted_stack(self: logging.Formatter, stack_info: str) -> str:
        return redact_text(format_stack(self, stack_info))

    logging.Formatter.formatException = redacted_exception  # type: ignore[method-assign]
    logging.Formatter.formatStack = redacted_stack  # type: ignore[method-assign]


_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
