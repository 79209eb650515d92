"""The local stack provisions what template.yaml declares: the two must not drift apart."""

from __future__ import annotations

import json

import boto3

from vlmwatch_local.cloud.loops import stream_filter
from vlmwatch_local.cloud.provision import load_template, provision


def resources(kind: str) -> dict:
    return {k: v.get("Properties", {}) for k, v in load_template()["Resources"].items() if v["Type"] == kind}


def test_buckets_match_the_template(stack):
    s3 = boto3.client("s3")
    declared = resources("AWS::S3::Bucket")
    assert set(stack.buckets) == set(declared) == {"InputBucket", "OutputBucket", "AccessLogBucket"}
    for logical, props in declared.items():
        name = stack.buckets[logical]
        assert s3.get_bucket_versioning(Bucket=name).get("Status") == props["VersioningConfiguration"]["Status"]
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto does not echo EventBridgeConfiguration back, so check the behaviour: only the input bucket's
    # object-created events reach the ingest queue through the template's rule.
    for logical in declared:
        s3.put_object(Bucket=stack.buckets[logical], Key=f"probe-{logical}.txt", Body=b"x")
    sqs = boto3.client("sqs")
    bodies = [
        m["Body"]
        for m in sqs.receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert len(bodies) == 1 and "probe-InputBucket.txt" in bodies[0]
    assert "NotificationConfiguration" in declared["InputBucket"]


def test_queues_and_redrive_match_the_template(stack):
    sqs = boto3.client("sqs")
    declared = resources("AWS::SQS::Queue")
    assert set(stack.queues) == set(declared)
    for logical, props in declared.items():
        attrs = sqs.get_queue_attributes(QueueUrl=stack.queues[logical], AttributeNames=["All"])["Attributes"]
        if "VisibilityTimeout" in props:
            assert int(attrs["VisibilityTimeout"]) == props["VisibilityTimeout"]
        if "RedrivePolicy" in props:
            target = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            policy = __import__("json").loads(attrs["RedrivePolicy"])
            assert policy["deadLetterTargetArn"] == stack.queue_arns[target]
            assert int(policy["maxReceiveCount"]) == props["RedrivePolicy"]["maxReceiveCount"]


def test_table_keys_indexes_stream_and_ttl_match_the_template(stack):
    ddb = boto3.client("dynamodb")
    (props,) = resources("AWS::DynamoDB::Table").values()
    table = ddb.describe_table(TableName=stack.table)["Table"]
    assert table["KeySchema"] == props["KeySchema"]
    declared = {i["IndexName"]: i for i in props["GlobalSecondaryIndexes"]}
    actual = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert (
        set(actual)
        == set(declared)
        == {
            "ByExecutionId",
            "InFlightByNextPoll",
            "ByKey",
            "ByStatus",
            "ByOutcome",
            "ByIdPrefix",
        }
    )
    for name, index in declared.items():
        assert actual[name]["KeySchema"] == index["KeySchema"]
        assert actual[name]["Projection"]["ProjectionType"] == index["Projection"]["ProjectionType"]
    assert table["StreamSpecification"]["StreamViewType"] == props["StreamSpecification"]["StreamViewType"]
    ttl = ddb.describe_time_to_live(TableName=stack.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]


def test_code_uses_the_index_names_the_template_declares():
    from vlmwatch.adapters.job_queries import OUTCOME_INDEX
    from vlmwatch.adapters.jobstore import EXECUTION_INDEX, ID_PREFIX_INDEX, IN_FLIGHT_INDEX, KEY_INDEX, STATUS_INDEX

    (props,) = resources("AWS::DynamoDB::Table").values()
    declared = {i["IndexName"] for i in props["GlobalSecondaryIndexes"]}
    assert declared == {EXECUTION_INDEX, IN_FLIGHT_INDEX, KEY_INDEX, STATUS_INDEX, OUTCOME_INDEX, ID_PREFIX_INDEX}


def test_function_environment_covers_every_setting_the_code_reads():
    from vlmwatch.core.settings import _ENV

    env = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    required = {"JOBS_TABLE_NAME", "OUTPUT_BUCKET", "VLMRUN_API_KEY_SECRET", "ROUTING_RULES", "POLL_BASE_SECONDS"}
    assert required <= set(env)
    assert set(env) - {"POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE"} <= set(_ENV)


def test_stream_filter_passes_only_transitions_into_a_terminal_status():
    patterns = stream_filter()

    def record(old: str | None, new: str, name: str = "MODIFY") -> dict:
        images = {"NewImage": {"status": {"S": new}}}
        if old:
            images["OldImage"] = {"status": {"S": old}}
        return {"eventName": name, "dynamodb": images}

    def passes(r: dict) -> bool:
        return any(p.matches_event(r) for p in patterns)

    assert passes(record("running", "completed"))
    assert passes(record("received", "failed"))
    assert passes(record("pending", "timed_out"))
    assert not passes(record("running", "running"))
    assert not passes(record("completed", "delivered"))
    assert not passes(record("completed", "completed"))
    assert not passes(record(None, "skipped", "INSERT"))


def test_an_existing_bucket_is_watched_instead_of_a_new_one(aws):
    """ExistingInputBucket: no bucket created, the rule and the functions' settings name the user's bucket."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="teams-existing-scans")
    # The one setting the README asks for on an existing bucket.
    s3.put_bucket_notification_configuration(
        Bucket="teams-existing-scans", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    stack = provision(region="us-east-1", parameters={"ExistingInputBucket": "teams-existing-scans"})

    assert "InputBucket" not in stack.buckets
    assert stack.input_bucket == "teams-existing-scans"
    assert stack.environment()["INPUT_BUCKET"] == "teams-existing-scans"
    s3.put_object(Bucket="teams-existing-scans", Key="scan.txt", Body=b"x")
    bodies = [
        m["Body"]
        for m in boto3.client("sqs")
        .receive_message(QueueUrl=stack.ingest_queue_url, MaxNumberOfMessages=10)
        .get("Messages", [])
    ]
    assert len(bodies) == 1 and "scan.txt" in bodies[0]


def test_existing_bucket_grants_name_that_bucket():
    statements = [
        st
        for role in ("IngestRole", "PollerRole", "CompleteRole")
        for st in load_template()["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if isinstance(st, dict) and str(st.get("Action", "")).startswith(("s3:", "['s3:"))
    ]
    text = json.dumps(statements)
    assert "ExistingInputBucket" in text and "InputBucket.Arn" not in text


def test_every_template_parameter_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [p for p in load_template()["Parameters"] if f"`{p}`" not in readme] == []
