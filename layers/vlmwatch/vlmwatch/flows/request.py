"""The ``POST /agent/execute`` request for one submit attempt: body, input reference, callback URL.

Every body validates against the official SDK's request models (a contract test checks it). The
callback URL carries the job id, the attempt and our HMAC token over both: a callback signed by
VLM Run to that URL is the evidence of which execution an attempt created (see :mod:`.submit`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.core.errors import VlmRunRejectedError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch.core.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from vlmwatch.adapters.vlmrun.client import VlmRunClient

# Files above this go through the presigned upload flow (the SDK's own threshold).
PRESIGNED_UPLOAD_THRESHOLD = 32 * 1024 * 1024


# The URL token's key is derived from the signing secret under its own label, never the secret itself:
# a token is then never a valid body signature (nor the reverse), whatever bytes VLM Run is asked to sign.
_TOKEN_KEY_LABEL = b"vlmwatch/callback-url-token/v1"


def callback_token_key(secret: str) -> bytes:
    """The key callback URL tokens are made with: HMAC-SHA256(secret, a fixed label), an HKDF-style expansion."""
    return hmac.new(secret.encode(), _TOKEN_KEY_LABEL, hashlib.sha256).digest()


def callback_token(secret: str, job_id: str, attempt: int) -> str:
    """Our HMAC over (job id, attempt): a callback URL carrying it was written by us for that attempt."""
    return hmac.new(callback_token_key(secret), f"{job_id}:{attempt}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_url(base: str, secret: str, job_id: str, attempt: int) -> str:
    """The webhook URL for one submit attempt: VLM Run calls it back, and so tells us which job it ran."""
    parts = urlsplit(base)
    query = urlencode({"job_id": job_id, "attempt": attempt, "token": callback_token(secret, job_id, attempt)})
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))


def input_fingerprint(file_input: Any) -> str | None:
    """A digest of the exact input reference one attempt sent (a presigned URL, a file id): kept on the
    row instead of the reference itself (a presigned URL is a credential), compared with what an
    execution echoes. None when there is nothing to compare."""
    if file_input is None:
        return None
    text = json.dumps(file_input, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sent_fingerprint(body: dict[str, Any]) -> str | None:
    return input_fingerprint((body.get("inputs") or {}).get("file"))


def echoed_fingerprint(inputs: Any) -> str | None:
    """The fingerprint of what an execution says it was given, or None when it echoes nothing usable."""
    return input_fingerprint(inputs.get("file")) if isinstance(inputs, dict) else None


class RequestBuilder:
    """Builds the request for one attempt; in upload mode, uploads the input once per job first.

    Args:
        settings: the deployment's settings.
        store: the job table (the uploaded file's id is recorded on the row before the POST).
        s3: an S3 client for the input bucket (presign, GET for uploads).
        vlmrun: zero-argument callable returning the VLM Run client.
        webhook_secret: zero-argument callable returning the webhook secret (webhooks on only).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        s3: S3Client,
        vlmrun: Callable[[], VlmRunClient],
        webhook_secret: Callable[[], str] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._s3 = s3
        self._vlmrun = vlmrun
        self._webhook_secret = webhook_secret

    def body(self, job: Job, attempt: int) -> dict[str, Any]:
        """The ``POST /agent/execute`` body for one attempt (the shapes the official SDK validates)."""
        route = job.route
        assert route is not None, "a received job always has a route"
        body: dict[str, Any] = {
            "name": route.agent,
            "inputs": {"file": self._input_file(job)},
            "batch": True,
            "model": route.model or self._settings.model,
            # session_id: the job id travels with the request, for VLM Run's logs and support.
            "metadata": {
                "environment": self._settings.vlmrun_environment,
                "session_id": job.job_id,
                "allow_training": False,
            },
        }
        config: dict[str, Any] = {}
        if route.prompt:
            config["prompt"] = route.prompt
            if route.json_schema is not None:
                config["json_schema"] = route.json_schema
        tier = self.service_tier(job)
        if tier != "auto":
            config["service_tier"] = tier
        if config:
            body["config"] = config
        if self._settings.callback_url:
            secret = self._webhook_secret() if self._webhook_secret else ""
            body["callback_url"] = callback_url(self._settings.callback_url, secret, job.job_id, attempt)
        return body

    def service_tier(self, job: Job) -> str:
        """The tier this job runs on: its route's (set at ingest), else the deployment's default (older rows)."""
        return (job.route.service_tier if job.route else None) or self._settings.service_tier

    def _input_file(self, job: Job) -> str | dict[str, Any]:
        # Always the exact version the job is about, even if the key was overwritten since.
        params: dict[str, Any] = {"Bucket": job.bucket, "Key": job.key}
        if job.version_id:
            params["VersionId"] = job.version_id
        if self._settings.input_mode == "url":
            # VLM Run would fetch whatever we presign: the same limit as an upload, before the URL leaves.
            self._check_size(job, params, "not sent")
            # The docs' own form: a bare URL string (MessageContent would need {"url": ...}).
            return str(
                self._s3.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=self._settings.presign_ttl_seconds
                )
            )
        file_id = job.input_file_id or self._upload(job, params)
        return {"type": "input_file", "file_id": file_id}

    def _check_size(self, job: Job, params: dict[str, Any], what: str) -> int:
        """The input's size in bytes.

        Raises:
            VlmRunRejectedError: it is above ``MaxObjectBytes`` (the job fails with this reason: retrying the
                same object cannot help).
        """
        size = job.size if job.size is not None else int(self._s3.head_object(**params)["ContentLength"])
        if size > self._settings.max_object_bytes:
            raise VlmRunRejectedError(
                f"the input is {size:,} bytes, above the {self._settings.max_object_bytes:,}-byte limit "
                f"(MaxObjectBytes): {what}"
            )
        return size

    def _upload(self, job: Job, params: dict[str, Any]) -> str:
        name = job.key.rsplit("/", 1)[-1]
        ctype = job.content_type or "application/octet-stream"
        client = self._vlmrun()
        size = self._check_size(job, params, "not uploaded")
        if size > PRESIGNED_UPLOAD_THRESHOLD:
            # Streamed from S3 to VLM Run's storage in 1 MiB chunks: memory stays flat for any size.
            def chunks() -> Iterator[bytes]:
                return iter(self._s3.get_object(**params)["Body"].iter_chunks(1024 * 1024))

            info = client.upload_file_presigned(name, chunks, ctype, size=size)
        else:
            content = self._s3.get_object(**params)["Body"].read()
            info = client.upload_file(name, content, ctype)
        # Recorded before the POST: every later attempt reuses it, and a claim that expires
        # without it provably never reached the POST.
        self._store.set_fields(job.job_id, {"input_file_id": info.id}, expect_status=Status.RECEIVED)
        return info.id
