"""``vlmwatch submit``: which keys the files become, and the upload itself (streamed, multipart).

Keys are decided for every file before anything is sent: a folder's files keep their paths relative to
the folder, everything goes under ``--prefix`` joined with exactly one ``/``, and two files that would
land on one key are refused (nothing uploaded) instead of one silently replacing the other.

The upload goes through boto3's transfer manager: a file is read in ``CHUNK`` parts, at most
``CONCURRENCY`` in flight, so memory stays flat whatever the size (and above 5 GB, which a single PUT
cannot carry).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.routing import AGENT_NAME, METADATA_AGENT_KEY
from vlmwatch_cli.errors import UsageError

CHUNK = 8 * 1024 * 1024
CONCURRENCY = 4
TRANSFER = TransferConfig(
    multipart_threshold=CHUNK, multipart_chunksize=CHUNK, max_concurrency=CONCURRENCY, use_threads=True
)
# S3 user metadata travels as HTTP headers: names are token characters, values printable ASCII.
_META_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_META_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")


@dataclass(frozen=True)
class Planned:
    """One file and the key it will have."""

    path: Path
    key: str
    size: int


@dataclass(frozen=True)
class Submitted:
    key: str
    version_id: str | None
    job_id: str


def join_key(prefix: str, relative: str) -> str:
    """``prefix`` and ``relative`` joined with exactly one ``/`` (``invoices`` + ``a.pdf`` = ``invoices/a.pdf``)."""
    parts = [p for p in (prefix.strip("/"), relative.lstrip("/")) if p]
    return "/".join(parts)


def plan(paths: Iterable[Path], prefix: str = "") -> list[Planned]:
    """The key of every file (folders walked recursively, relative paths kept).

    Raises:
        UsageError: a path does not exist, a folder holds no file, or two files would share a key.
    """
    planned: list[Planned] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise UsageError(f"{path} holds no file")
            planned += [Planned(f, join_key(prefix, f.relative_to(path).as_posix()), f.stat().st_size) for f in files]
        elif path.is_file():
            planned.append(Planned(path, join_key(prefix, path.name), path.stat().st_size))
        else:
            raise UsageError(f"no such file or folder: {path}")
    by_key: dict[str, list[Path]] = {}
    for item in planned:
        by_key.setdefault(item.key, []).append(item.path)
    clashes = {key: files for key, files in by_key.items() if len(files) > 1}
    if clashes:
        listed = "; ".join(f"{key} <- {', '.join(str(f) for f in files)}" for key, files in sorted(clashes.items()))
        raise UsageError(
            f"{len(clashes)} key(s) would be written by several files, nothing uploaded: {listed}. "
            "Submit a folder that holds them (paths relative to it are kept), or one --prefix per file."
        )
    return planned


def object_metadata(agent: str | None, pairs: Iterable[str]) -> dict[str, str]:
    """``--agent`` and ``--metadata K=V`` as S3 user metadata (``x-amz-meta-*``).

    Raises:
        UsageError: a pair is not ``K=V``, a name or value cannot travel as a header, or the agent name is
            not ``name`` or ``name:version``.
    """
    metadata: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _META_NAME.match(name) or not _META_VALUE.match(value):
            raise UsageError(f"--metadata {pair!r}: use NAME=VALUE (name: letters, digits, - and _; value: ASCII)")
        metadata[name.lower()] = value
    if agent is not None:
        if not AGENT_NAME.match(agent):
            raise UsageError(f"--agent {agent!r}: use an agent name, or name:version")
        metadata[METADATA_AGENT_KEY] = agent
    return metadata


def upload(
    s3: Any,
    bucket: str,
    item: Planned,
    metadata: dict[str, str],
    *,
    progress: Callable[[int], None] | None = None,
) -> Submitted:
    """Upload one planned file (multipart above ``CHUNK``); returns the job id its version becomes."""
    extra: dict[str, Any] = {"ContentType": mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"}
    if metadata:
        extra["Metadata"] = metadata
    s3.upload_file(str(item.path), bucket, item.key, ExtraArgs=extra, Config=TRANSFER, Callback=progress)
    # The transfer manager does not return the version it wrote: ask for it (one HEAD per file).
    version = ObjectVersion.from_response(s3.head_object(Bucket=bucket, Key=item.key))
    return Submitted(item.key, version.version_id, job_id_for(bucket, item.key, version))
