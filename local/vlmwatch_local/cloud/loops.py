"""Event-source loops that do locally what AWS does for the deployed stack.

* SQS → IngestFunction: receive up to 10 messages, invoke with the real SQS event shape, delete what
  succeeded, and leave ``batchItemFailures`` on the queue (SQS redrive moves them to the DLQ).
* timer → PollerFunction: :meth:`LocalAws.run_poller`.
* stepfunctions mode: each job's state machine (:attr:`LocalAws.machines`) moves on when its time comes.
* DynamoDB stream → CompleteFunction: read every new record (page after page, as Lambda keeps polling a
  shard), apply the template's ``FilterCriteria``, invoke in batches, retry failed records, and park
  records that keep failing in the on-failure queue, as the event source mapping would.

The stream also keeps :attr:`LocalAws.rows` (every job row as last written) up to date for free, so a
harness waiting for jobs to settle reads it instead of scanning the table after every turn: a scan of
1,000 rows costs more than everything else in a turn.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import boto3
from boto3.dynamodb.types import TypeDeserializer
from moto.events.models import EventPattern

from vlmwatch_local import ROOT
from vlmwatch_local.cloud.provision import StackResources, load_template
from vlmwatch_local.cloud.stepfunctions import LocalStepFunctions


def load_handler(name: str) -> ModuleType:
    """Import ``functions/<name>/app.py`` as module ``<name>_app`` (every handler is called ``app``)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    """Enough of the Lambda context object for powertools."""

    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    timeout_seconds: int = 60
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def stream_filter(template: dict[str, Any] | None = None) -> list[EventPattern]:
    """The CompleteFunction's stream ``FilterCriteria`` patterns, read from the template."""
    template = template or load_template()
    events = template["Resources"]["CompleteFunction"]["Properties"]["Events"]
    stream = next(e for e in events.values() if e["Type"] == "DynamoDB")
    return [EventPattern.load(f["Pattern"]) for f in stream["Properties"]["FilterCriteria"]["Filters"]]


@dataclass
class Invocation:
    function: str
    records: int
    failures: int
    seconds: float  # wall time
    cpu_seconds: float = 0.0  # this process's CPU time meanwhile: what the handler cost, whatever the machine's load


class LocalAws:
    """Drives the real handlers from the provisioned stack.

    Args:
        stack: what :func:`vlmwatch_local.cloud.provision.provision` created.
        endpoint_url: the moto server, or None for in-process ``mock_aws``.
        retry_delay: seconds before a failed ingest message is visible again (AWS: the queue's
            visibility timeout; shorter here so a demo does not wait six minutes).
    """

    def __init__(
        self,
        stack: StackResources,
        *,
        endpoint_url: str | None = None,
        retry_delay: int = 1,
        stream_max_attempts: int = 5,
    ) -> None:
        kw: dict[str, Any] = {"region_name": stack.region}
        if endpoint_url:
            kw["endpoint_url"] = endpoint_url
        self.stack = stack
        self.sqs = boto3.client("sqs", **kw)
        self.streams = boto3.client("dynamodbstreams", **kw)
        self.retry_delay = retry_delay
        self.stream_max_attempts = stream_max_attempts
        self.handlers = {name: load_handler(name) for name in ("ingest", "poller", "pollonce", "complete", "webhook")}
        self.filters = stream_filter()
        self._iterators: dict[str, str] = {}
        self._stream_retry: list[tuple[dict[str, Any], int]] = []
        self.invocations: list[Invocation] = []
        self.parked: list[dict[str, Any]] = []
        # job_id -> the row as its last stream record wrote it (removed rows dropped; "#..." rows are not jobs)
        self.rows: dict[str, dict[str, Any]] = {}
        # stepfunctions mode: the jobs' state machines (set by the local stack), moved on in step()
        self.machines: LocalStepFunctions | None = None
        self._deserialize = TypeDeserializer().deserialize

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        started, cpu = time.monotonic(), time.process_time()
        module = self.handlers[function]
        try:
            result = module.lambda_handler(event, LambdaContext(function_name=f"vlmwatch-{function}"))
        finally:
            # All handlers share one process here (one per function in AWS). With metrics disabled,
            # powertools still buffers them and prints at 100 values: drop them after each invocation.
            if os.environ.get("POWERTOOLS_METRICS_DISABLED") == "1" and hasattr(module, "kit"):
                module.kit.metrics.clear_metrics()
        failures = len((result or {}).get("batchItemFailures", [])) if isinstance(result, dict) else 0
        self.invocations.append(
            Invocation(
                function,
                len(event.get("Records", [])),
                failures,
                time.monotonic() - started,
                time.process_time() - cpu,
            )
        )
        return result

    # -- SQS → ingest ---------------------------------------------------------------------------

    def pump_ingest(self, *, max_batches: int = 100, wait: int = 0) -> int:
        """Deliver queued messages to the ingest handler; returns how many messages were handled."""
        url = self.stack.ingest_queue_url
        arn = self.stack.queue_arns["IngestQueue"]
        handled = 0
        for _ in range(max_batches):
            messages = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                VisibilityTimeout=30,
            ).get("Messages", [])
            if not messages:
                break
            event = {"Records": [sqs_record(m, arn, self.stack.region) for m in messages]}
            try:
                result = self.invoke("ingest", event)
            except BaseException as exc:  # the function errored or died: every message comes back
                if not isinstance(exc, Exception) and not getattr(exc, "simulated", False):
                    raise
                result = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:  # one DeleteMessageBatch for what succeeded, as the event source mapping does
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
                deleted = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
                if deleted.get("Failed"):
                    raise RuntimeError(f"DeleteMessageBatch failed: {deleted['Failed']}")
            for message in messages:
                if message["MessageId"] in failed:
                    self.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self.retry_delay
                    )
            handled += len(messages)
        return handled

    def send_raw(self, body: str | dict[str, Any]) -> None:
        """Put a message on the ingest queue as-is (duplicates, other shapes)."""
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.stack.ingest_queue_url, MessageBody=text)

    # -- timer → poller -------------------------------------------------------------------------

    def run_poller(self) -> dict[str, Any]:
        try:
            return self.invoke("poller", scheduled_event(self.stack.region))
        except BaseException as exc:  # a run that dies is replaced by the next scheduled one
            if not isinstance(exc, Exception) and not getattr(exc, "simulated", False):
                raise
            return {"polled": 0, "crashed": True}

    # -- stream → complete ----------------------------------------------------------------------

    def pump_stream(self, batch_size: int = 10) -> int:
        """Deliver new stream records that pass the filter; returns how many were delivered."""
        records = [r for r, _ in self._stream_retry]
        attempts = {r["eventID"]: n for r, n in self._stream_retry}
        self._stream_retry = []
        records += [r for r in self._read_stream() if any(p.matches_event(r) for p in self.filters)]
        delivered = 0
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            try:
                result = self.invoke("complete", {"Records": batch})
            except BaseException as exc:  # the function errored (or died): AWS retries the whole batch
                if not isinstance(exc, Exception) and not getattr(exc, "simulated", False):
                    raise
                result = {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in batch]}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            for record in batch:
                seq = record["dynamodb"]["SequenceNumber"]
                if seq in failed:
                    n = attempts.get(record["eventID"], 0) + 1
                    if n >= self.stream_max_attempts:
                        self._park(record)
                    else:
                        self._stream_retry.append((record, n))
                else:
                    delivered += 1
        return delivered

    def _park(self, record: dict[str, Any]) -> None:
        self.parked.append(record)
        url = self.stack.queues.get("FailedDeliveriesQueue")
        if url:
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"record": record}, default=str))

    def _read_stream(self) -> list[dict[str, Any]]:
        arn = self.stack.stream_arn
        out: list[dict[str, Any]] = []
        shards = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        for shard in shards:
            sid = shard["ShardId"]
            if sid not in self._iterators:
                self._iterators[sid] = self.streams.get_shard_iterator(
                    StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while True:
                page = self.streams.get_records(ShardIterator=self._iterators[sid], Limit=1000)
                self._iterators[sid] = page.get("NextShardIterator") or self._iterators[sid]
                records = page.get("Records", [])
                for record in records:
                    self._follow(record)
                    out.append(lambda_stream_record(record, arn, self.stack.region))
                if len(records) < 1000:
                    break
        return out

    def _follow(self, record: dict[str, Any]) -> None:
        """Keep :attr:`rows` as the stream says the table is."""
        image = record["dynamodb"].get("NewImage")
        key = record["dynamodb"]["Keys"]["job_id"]["S"]
        if key.startswith("#"):
            return
        if record["eventName"] == "REMOVE" or image is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = {name: self._deserialize(value) for name, value in image.items()}

    # -- everything -----------------------------------------------------------------------------

    def step(self, *, ingest_batches: int = 100) -> dict[str, int]:
        """One turn of every loop, in the order AWS would usually get to them."""
        ingested = self.pump_ingest(max_batches=ingest_batches)
        stepped = self.machines.run_due() if self.machines is not None else 0
        delivered = self.pump_stream()
        polled = self.run_poller()
        delivered += self.pump_stream()
        return {"ingested": ingested, "polled": polled.get("polled", 0), "stepped": stepped, "delivered": delivered}


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A received SQS message in the shape Lambda's SQS event source passes it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def lambda_stream_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB Streams API record in the shape Lambda's stream event source passes it."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": _jsonable(dynamodb),
        "eventSourceARN": stream_arn,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_jsonable(v) for v in value]
    return value


def scheduled_event(region: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/vlmwatch-poll"],
        "detail": {},
    }


def function_url_event(method: str, path: str, headers: dict[str, str], body: bytes, query: str = "") -> dict[str, Any]:
    """An HTTP request in the shape a Lambda function URL passes it (payload format 2.0)."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    url_id = "a1b2c3d4e5f6g7h8i9j0"
    params = {k: ",".join(v) for k, v in parse_qs(query).items()}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        **({"queryStringParameters": params} if params else {}),
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id,
            "domainName": f"{url_id}.lambda-url.us-east-1.on.aws",
            "domainPrefix": url_id,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class FunctionUrlApp:
    """A WSGI app that serves a handler the way a Lambda function URL does (for the local stack)."""

    def __init__(self, aws: LocalAws, function: str = "webhook") -> None:
        self._aws = aws
        self._function = function

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        event = function_url_event(
            environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"), headers, body, environ.get("QUERY_STRING", "")
        )
        result = self._aws.invoke(self._function, event)
        status = int(result.get("statusCode", 200))
        start_response(f"{status} {'OK' if status < 400 else 'Error'}", list((result.get("headers") or {}).items()))
        return [str(result.get("body", "")).encode()]
