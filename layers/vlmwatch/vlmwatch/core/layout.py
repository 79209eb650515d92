"""Where a job's outputs go in the output bucket. Pure: names only, no S3.

Layout (``prefix`` is configurable), one folder per input key with fixed names inside::

    <prefix><key>.vlmwatch/result.json        the newest version's result document (vlmwatch.result/v1)
    <prefix><key>.vlmwatch/error.json         ... or its error document (vlmwatch.error/v1): one of the two
    <prefix><key>.vlmwatch/versions/<v>/result.json | error.json       one outcome per object version
    <prefix><key>.vlmwatch/versions/<v>/artifacts/<object_id>.<ext>   that version's artifacts
    <prefix><key>.vlmwatch/versions/<v>/runs/<n>/result.json | error.json | artifacts/   reprocess run n (>= 2)

``<v>`` is :attr:`ObjectVersion.path_token` (the S3 version id; ``etag-<etag>`` in an unversioned bucket).

No input key can write over another key's outputs: every output key is ``<prefix><key>.vlmwatch/``
followed by a suffix that never contains ``.vlmwatch/``, so the last ``.vlmwatch/`` in an output key
says which input key it belongs to. Keys too long for that (S3 keys end at 1,024 bytes) go under
``<prefix>.vlmwatch-long/<sha256 of the key>/`` instead, which holds no ``.vlmwatch/`` at all; the
documents inside still name the full source key.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from typing import Any

from vlmwatch.core.identity import ObjectVersion

MARKER = ".vlmwatch/"
LONG_FOLDER = ".vlmwatch-long/"
S3_KEY_LIMIT = 1024
# Room kept for what follows the folder: versions/<v>/artifacts/<object id>.<ext>.
SUFFIX_ROOM = 200
RESULT_NAME = "result.json"
RUNS = "runs/"
ERROR_NAME = "error.json"
ARTIFACT_REF = re.compile(r"^(img|vid|aud|doc|recon|arr|url)_[0-9a-f]{6}$")
_EXT_BY_KIND = {"vid": "mp4", "aud": "mp3", "doc": "pdf", "recon": "spz", "arr": "npy", "url": "url.txt", "img": "jpg"}
_EXT_BY_TYPE = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "application/json": "json",
    "text/plain": "txt",
}


def artifact_refs(response: Any) -> list[str]:
    """Every artifact object id referenced anywhere in an execution response, in first-seen order."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if ARTIFACT_REF.match(node):
                found.setdefault(node, None)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(response)
    return list(found)


def artifact_extension(object_id: str, content_type: str) -> str:
    kind = object_id.split("_", 1)[0]
    if kind == "url":
        return _EXT_BY_KIND["url"]
    return (
        _EXT_BY_TYPE.get(content_type)
        or (mimetypes.guess_extension(content_type) or "").lstrip(".")
        or _EXT_BY_KIND.get(kind, "bin")
    )


@dataclass(frozen=True)
class OutputLayout:
    """Output keys for input keys (``prefix``: "" or ending in "/")."""

    bucket: str
    prefix: str = ""

    def folder(self, input_key: str) -> str:
        folder = f"{self.prefix}{input_key}{MARKER}"
        if len(folder.encode()) + SUFFIX_ROOM > S3_KEY_LIMIT:
            folder = f"{self.prefix}{LONG_FOLDER}{hashlib.sha256(input_key.encode()).hexdigest()}/"
        return folder

    def versions_folder(self, input_key: str) -> str:
        """Where every version of the key has its folder."""
        return f"{self.folder(input_key)}versions/"

    def version_folder(self, input_key: str, version: ObjectVersion) -> str:
        return f"{self.versions_folder(input_key)}{version.path_token}/"

    def run_folder(self, input_key: str, version: ObjectVersion, run: int = 1) -> str:
        """Run 1 writes in the version's folder (where it always has); run N in ``runs/<N>/`` inside it."""
        folder = self.version_folder(input_key, version)
        return folder if run <= 1 else f"{folder}{RUNS}{run}/"

    def runs_prefix(self, input_key: str, version: ObjectVersion) -> str:
        return f"{self.version_folder(input_key, version)}{RUNS}"

    def result_key(self, input_key: str, version: ObjectVersion, run: int = 1) -> str:
        return f"{self.run_folder(input_key, version, run)}{RESULT_NAME}"

    def error_key(self, input_key: str, version: ObjectVersion, run: int = 1) -> str:
        return f"{self.run_folder(input_key, version, run)}{ERROR_NAME}"

    def artifact_key(
        self, input_key: str, version: ObjectVersion, object_id: str, content_type: str, run: int = 1
    ) -> str:
        ext = artifact_extension(object_id, content_type)
        return f"{self.run_folder(input_key, version, run)}artifacts/{object_id}.{ext}"

    def document_run(self, input_key: str, key: str) -> int | None:
        """The run whose result or error document ``key`` is (1 in a version's folder, N in its ``runs/N/``);
        None for anything else (an artifact, the stable copies, another key's folder)."""
        folder = self.versions_folder(input_key)
        inside = key[len(folder) :].split("/") if key.startswith(folder) else []
        if not inside or inside[-1] not in (RESULT_NAME, ERROR_NAME):
            return None
        if len(inside) == 2:
            return 1
        if len(inside) == 4 and inside[1] + "/" == RUNS and inside[2].isdigit():
            return int(inside[2])
        return None

    def latest_keys(self, input_key: str) -> tuple[str, str]:
        """(result, error) at the key's stable path."""
        folder = self.folder(input_key)
        return f"{folder}{RESULT_NAME}", f"{folder}{ERROR_NAME}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
