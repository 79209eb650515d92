"""Artifacts are streamed from VLM Run into S3: a 300 MB one passes through a few MB of memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator

import boto3
import httpx
import pytest

from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.core.errors import TooLargeError
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status

pytestmark = pytest.mark.e2e
MB = 1024 * 1024
SIZE = 300 * MB


@pytest.fixture
def s3_elsewhere(monkeypatch) -> Iterator[object]:
    """S3 (moto) in another process: what it stores does not count against this one's memory."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(  # noqa: S603 - our interpreter, moto's server
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{endpoint}/moto-api/data.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="out")
    yield s3
    proc.terminate()
    proc.wait(timeout=10)


def video_api(size: int) -> httpx.MockTransport:
    """VLM Run serving one artifact of ``size`` bytes, generated as it is sent (never held whole)."""

    def chunks() -> Iterator[bytes]:
        block = bytes(range(256)) * (MB // 256)
        sent = 0
        while sent < size:
            piece = block[: min(MB, size - sent)]
            sent += len(piece)
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/artifacts"
        return httpx.Response(200, headers={"Content-Type": "video/mp4", "Content-Length": str(size)}, content=chunks())

    return httpx.MockTransport(handler)


def job() -> Job:
    return Job(
        job_id="j" * 40,
        bucket="in",
        key="clips/long.mp4",
        version_id="v1",
        status=Status.COMPLETED,
        created_at=1,
        updated_at=1,
    )


@pytest.mark.long(seconds=12)
def test_a_300_mb_artifact_goes_to_s3_through_a_bounded_buffer(s3_elsewhere):
    client = VlmRunClient("https://api.vlm.run/v1", "key", transport=video_api(SIZE))
    writer = OutputWriter(s3_elsewhere, "out", "results/")

    tracemalloc.start()
    try:
        with client.open_artifact("exec-1", "vid_1") as stream:
            record = writer.put_artifact_stream(job(), stream, max_bytes=1024**3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert record.bytes == SIZE
    key = record.s3_uri.removeprefix("s3://out/")
    assert s3_elsewhere.head_object(Bucket="out", Key=key)["ContentLength"] == SIZE
    tail = s3_elsewhere.get_object(Bucket="out", Key=key, Range=f"bytes={SIZE - 4}-{SIZE - 1}")["Body"].read()
    assert tail == bytes([252, 253, 254, 255])
    assert peak < 128 * MB, f"peak {peak / MB:.0f} MB"
    print(f"300 MB artifact copied with a peak of {peak / MB:.1f} MB of Python memory")
    assert peak < 40 * MB  # one 8 MiB part and its copies, not the file


def test_an_artifact_above_the_limit_is_refused_and_nothing_is_left(s3_elsewhere):
    client = VlmRunClient("https://api.vlm.run/v1", "key", transport=video_api(20 * MB))
    writer = OutputWriter(s3_elsewhere, "out", "results/")

    with (
        pytest.raises(TooLargeError, match=r"vid_1 is 20,971,520 bytes, above the 10,485,760-byte limit"),
        client.open_artifact("exec-1", "vid_1") as stream,
    ):
        writer.put_artifact_stream(job(), stream, max_bytes=10 * MB)
    assert s3_elsewhere.list_objects_v2(Bucket="out").get("KeyCount", 0) == 0
    assert s3_elsewhere.list_multipart_uploads(Bucket="out").get("Uploads", []) == []
