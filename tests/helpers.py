"""Small helpers shared by the test suites."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import boto3

from vlmwatch_local.cloud.provision import StackResources


def make_pdf(*pages: str) -> bytes:
    """A small, valid PDF with one line of text per page (correct xref, so real parsers accept it)."""
    objects: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<</Type/Catalog/Pages 2 0 R>>")
    objects.append(f"<</Type/Pages/Kids[{kids}]/Count {n}>>".encode())
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        stream = f"BT /F1 18 Tf 40 700 Td ({text}) Tj ET".encode()
        objects.append(
            f"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents {4 + 2 * i} 0 R"
            f"/Resources<</Font<</F1 {font} 0 R>>>>>>".encode()
        )
        objects.append(b"<</Length %d>>stream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


PDF_BYTES = make_pdf("Invoice 42: total 99.50 EUR")


def drop(
    stack: StackResources,
    key: str,
    body: bytes = b"hello vlmwatch\n",
    content_type: str = "text/plain",
    metadata: dict[str, str] | None = None,
) -> str | None:
    """Put an object in the input bucket, as a user would; returns its version id."""
    return stack.drop(key, body, content_type, metadata)


def result_key(key: str, prefix: str = "results/") -> str:
    """Where the newest version's result document of input ``key`` lands (the key's stable path)."""
    return f"{prefix}{key}.vlmwatch/result.json"


def error_key(key: str, prefix: str = "results/") -> str:
    return f"{prefix}{key}.vlmwatch/error.json"


def output_keys(stack: StackResources) -> list[str]:
    return stack.output_keys()


def read_json(stack: StackResources, key: str) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name=stack.region)
    return json.loads(s3.get_object(Bucket=stack.output_bucket, Key=key)["Body"].read())


def with_bucket(
    event: dict[str, Any], bucket: str, key: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """A sample event from events/ pointed at this test's bucket (and object)."""
    text = json.dumps(event).replace("example-input-bucket", bucket)
    out = json.loads(text)
    for record in out["Records"]:
        body = json.loads(record["body"]) if "body" in record else record
        targets = body.get("Records", [body]) if isinstance(body, dict) else []
        for target in targets:
            obj = target["detail"]["object"] if "detail" in target else target["s3"]["object"]
            if key is not None:
                obj["key"] = key
            if version is not None:
                obj["version-id" if "detail" in target else "versionId"] = version
        if "body" in record:
            record["body"] = json.dumps(body)
    return out


def jobs(stack: StackResources) -> list[dict[str, Any]]:
    return stack.jobs()


class Clock:
    """A clock tests can move."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def deep(event: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(event)


def run_cli(stack: StackResources, *args: str) -> tuple[int, str]:
    """The `vlmwatch` command against ``stack`` (every name given, a wide terminal): (exit code, output)."""
    from typer.testing import CliRunner

    from vlmwatch_cli.main import app

    env = {
        "VLMWATCH_STACK": "",
        "VLMWATCH_INPUT_BUCKET": stack.input_bucket,
        "VLMWATCH_OUTPUT_BUCKET": stack.output_bucket,
        "VLMWATCH_TABLE": stack.table,
        "VLMWATCH_INGEST_QUEUE_URL": stack.ingest_queue_url,
        "COLUMNS": "220",
    }
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def settle(local, clock, rounds: int = 12) -> None:
    """Turn the local stack's loops, advancing the clock 30 s each time."""
    for _ in range(rounds):
        local.step()
        clock.advance(30)
