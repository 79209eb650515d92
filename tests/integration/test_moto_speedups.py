"""moto with :mod:`vlmwatch_local.cloud.moto_speedups` answers exactly as moto does, only faster.

Every item-returning DynamoDB call and stream read below is answered twice, by the fast path and by moto's
own serializer, and the two bodies must say the same thing; the update-expression cache and the faster tree
walk must leave the same items; SQS must judge a message's retention period as moto does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import BaseResponse

from vlmwatch_local.cloud import moto_speedups

REGION = "us-east-1"


@pytest.fixture
def compared() -> Iterator[list[tuple[str, Any, Any]]]:
    """Answer with the fast path, and record moto's own answer beside it."""
    moto_speedups.install()
    fast = BaseResponse.serialized
    original = moto_speedups._originals["serialized"]
    seen: list[tuple[str, Any, Any]] = []

    def both(self: Any, result: Any) -> Any:
        mine, theirs = fast(self, result), original(self, result)
        seen.append((self._get_action(), json.loads(mine[2] or "{}"), json.loads(theirs[2] or "{}")))
        return mine

    BaseResponse.serialized = both  # type: ignore[method-assign]
    try:
        with mock_aws():
            yield seen
    finally:
        BaseResponse.serialized = fast  # type: ignore[method-assign]


def test_item_and_stream_answers_are_the_same_as_motos_own(compared):
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    item = {
        "id": {"S": "a"},
        "n": {"N": "1.5"},
        "b": {"B": b"\x00\xffbytes"},
        "flags": {"SS": ["x", "y"]},
        "nested": {"M": {"list": {"L": [{"N": "1"}, {"NULL": True}, {"BOOL": False}]}}},
    }
    ddb.put_item(TableName="t", Item=item)
    ddb.put_item(TableName="t", Item={"id": {"S": "b"}, "n": {"N": "2"}}, ReturnValues="ALL_OLD")
    update = "SET n = n + :one, #s = :s, hist = list_append(if_not_exists(hist, :none), :h) REMOVE flags"
    for _ in range(2):  # the second time from the cached expression
        got = ddb.update_item(
            TableName="t",
            Key={"id": {"S": "a"}},
            UpdateExpression=update,
            ConditionExpression="attribute_exists(id)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":s": {"S": "running"},
                ":none": {"L": []},
                ":h": {"L": [{"S": "x"}]},
            },
            ReturnValues="ALL_NEW",
        )
    assert got["Attributes"]["n"] == {"N": "3.5"} and "flags" not in got["Attributes"]
    assert got["Attributes"]["hist"] == {"L": [{"S": "x"}, {"S": "x"}]}
    for key in ("c", "d"):  # items that do not exist yet: moto validates the expression twice
        created = ddb.update_item(
            TableName="t",
            Key={"id": {"S": key}},
            UpdateExpression="SET #s = :s, m = :one",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":s": {"S": key}},
            ReturnValues="ALL_NEW",
        )
        assert created["Attributes"] == {"id": {"S": key}, "status": {"S": key}, "m": {"N": "1"}}
    ddb.get_item(TableName="t", Key={"id": {"S": "a"}}, ConsistentRead=True)
    ddb.query(TableName="t", KeyConditionExpression="id = :a", ExpressionAttributeValues={":a": {"S": "a"}})
    ddb.scan(TableName="t", Limit=2)
    ddb.batch_get_item(RequestItems={"t": {"Keys": [{"id": {"S": "a"}}, {"id": {"S": "b"}}]}})
    ddb.delete_item(TableName="t", Key={"id": {"S": "b"}}, ReturnValues="ALL_OLD")
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):  # errors: moto's own path
        ddb.put_item(TableName="t", Item={"id": {"S": "a"}}, ConditionExpression="attribute_not_exists(id)")

    streams = boto3.client("dynamodbstreams", region_name=REGION)
    arn = ddb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    assert records[0]["eventName"] == "INSERT" and records[-1]["eventName"] == "REMOVE"
    assert records[0]["dynamodb"]["NewImage"]["b"] == {"B": b"\x00\xffbytes"}

    actions = {action for action, _, _ in compared}
    assert {"PutItem", "UpdateItem", "GetItem", "Query", "Scan", "BatchGetItem", "DeleteItem", "GetRecords"} <= actions
    for action, mine, theirs in compared:
        assert mine == theirs, action


def test_sqs_judges_the_retention_period_as_moto_does():
    moto_speedups.install()
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for i in range(4):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
        from moto.sqs.models import SQSBackend, sqs_backends

        backend = sqs_backends["123456789012"][REGION]
        messages = backend.get_queue("q")._messages
        for message, age in zip(messages, (0, 59, 61, 3600), strict=True):
            message.sent_timestamp = int((time.time() - age) * 1000)
        fast = SQSBackend.is_message_valid_based_on_retention_period
        original = moto_speedups._originals["retained"]
        assert [fast(backend, "q", m) for m in messages] == [original(backend, "q", m) for m in messages]
        assert [fast(backend, "q", m) for m in messages] == [True, True, False, False]
        assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"][0]["Body"] == "0"


def test_sqs_counts_are_right_after_sending_and_fifo_deduplication_still_reads_its_flag():
    moto_speedups.install()
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        fifo = sqs.create_queue(
            QueueName="f.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        for i in range(7):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
            sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")  # deduplicated by content
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)

        def counts(queue: str) -> dict[str, str]:
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            return sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)["Attributes"]

        assert counts(url) == {"ApproximateNumberOfMessages": "5", "ApproximateNumberOfMessagesNotVisible": "2"}
        assert counts(fifo)["ApproximateNumberOfMessages"] == "1"


def test_update_expressions_are_refused_for_the_same_reasons():
    def answers() -> list[str]:
        out = []
        with mock_aws():
            ddb = boto3.client("dynamodb", region_name=REGION)
            ddb.create_table(
                TableName="t",
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            )
            for expression in (
                "SET a = :v SET b = :v",
                "ADD n :one ADD m :one SET a = :v SET b = :v",
                "REMOVE a REMOVE b",
                "SET a = :v REMOVE b ADD n :one",
                "SET a = :v, a = :v",
                "SET id = :v",
            ):
                try:
                    ddb.update_item(
                        TableName="t",
                        Key={"id": {"S": "k"}},
                        UpdateExpression=expression,
                        ExpressionAttributeValues={":v": {"S": "x"}, ":one": {"N": "1"}},
                    )
                    out.append("ok")
                except ddb.exceptions.ClientError as exc:
                    out.append(str(exc))
        return out

    moto_speedups.install()
    fast = answers()
    moto_speedups.uninstall()
    try:
        assert fast == answers()
    finally:
        moto_speedups.install()
    assert fast[3] == "ok" and all(a != "ok" for i, a in enumerate(fast) if i != 3)
