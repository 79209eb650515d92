"""Everything the CLI prints goes through here: text an uploader or VLM Run controls is shown as text.

Object keys, VLM Run's messages and AWS's error text are chosen by someone other than the operator. The
console parses no markup and no emoji codes (a key ``in/a[/]b.txt`` would raise ``MarkupError``,
``[bold red]FAILED[/]`` would print as a red FAILED), and :func:`clean` replaces every control character
(C0, DEL, C1 including the 8-bit CSI, and the bidirectional overrides that reorder what a terminal shows)
with a visible escape, so no key can clear the screen, move the cursor, set a window title or hide text.
Colour comes only from styles given with :func:`line` parts, never from inside the text.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

# C0 controls (newline and tab included: a key is one line), DEL, C1 controls, and Unicode's
# bidirectional embeddings/overrides/isolates and line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

console = Console(highlight=False, markup=False, emoji=False, soft_wrap=False)
errors = Console(highlight=False, markup=False, emoji=False, stderr=True)


def fit_terminal() -> None:
    """Take ``COLUMNS`` as it is when a command runs (Rich reads it once, when the console is made): a
    script or a test that sets it gets tables that wide, whatever the environment at import was."""
    import os

    columns = os.environ.get("COLUMNS", "")
    for each in (console, errors):
        each.width = int(columns) if columns.isdigit() and int(columns) > 0 else each.width


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(value: Any) -> str:
    """``value`` as one line of plain text: every control character shown as an escape (``\\x1b``)."""
    return _UNSAFE.sub(_visible, value if isinstance(value, str) else str(value))


def text(value: Any, style: str = "") -> Text:
    """A :class:`~rich.text.Text` of ``value``, cleaned: safe in a table cell or a line."""
    return Text(clean(value), style=style)


Part = str | tuple[Any, str] | Text


def line(*parts: Part) -> Text:
    """One line from parts: a plain string (cleaned), ``(value, style)`` (cleaned, styled), or a Text
    already made by :func:`text`."""
    out = Text()
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(clean(part[0]), style=part[1])
        else:
            out.append(clean(part))
    return out


def say(*parts: Part, soft_wrap: bool = False) -> None:
    console.print(line(*parts), soft_wrap=soft_wrap)


def warn(*parts: Part) -> None:
    errors.print(line(("error: ", "red"), *parts), soft_wrap=True)


def warn_note(*parts: Part) -> None:
    """A note on stderr (scripts reading stdout, e.g. ``--json``, never see it)."""
    errors.print(line(("note: ", "yellow"), *parts), soft_wrap=True)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def emit_json(document: str) -> None:
    """Print one JSON document for scripts. JSON already escapes C0 controls; C1 controls and the
    bidirectional overrides it leaves raw are escaped too (``\\u009b``), which any JSON reader decodes."""
    sys.stdout.write(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document) + "\n")
