"""The template's permissions, read as a reviewer would: every grant names its resource.

A function or state machine without an explicit ``Role`` gets a SAM-generated one, and SAM then attaches
AWS managed policies with ``"Resource": "*"`` for its event sources and tracing
(``AWSLambdaSQSQueueExecutionRole``, ``AWSLambdaDynamoDBExecutionRole``, ``AWSXrayWriteOnlyAccess``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vlmwatch_local.cloud.provision import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]

# The only grants that may name "*": services whose actions have no resource-level permissions.
WILDCARD_ALLOWED = {
    # X-Ray: PutTraceSegments / PutTelemetryRecords (and the sampling calls) accept no resource ARN.
    frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"}),
    frozenset(
        {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"}
    ),
    # Completing a waiting state machine: a service integration's task token names no ARN IAM can match.
    frozenset({"states:SendTaskSuccess"}),
    # CloudWatch Logs delivery for Step Functions logging: these APIs take no resource.
    frozenset(
        {
            "logs:CreateLogDelivery",
            "logs:GetLogDelivery",
            "logs:UpdateLogDelivery",
            "logs:DeleteLogDelivery",
            "logs:ListLogDeliveries",
            "logs:PutResourcePolicy",
            "logs:DescribeResourcePolicies",
            "logs:DescribeLogGroups",
        }
    ),
}


def statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in the template (roles and inline function/state machine policies), resolved
    through ``Fn::If`` branches."""

    def flatten(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict) and "Fn::If" in node:
            for branch in node["Fn::If"][1:]:
                yield from flatten(branch)
        elif isinstance(node, dict) and "Effect" in node:
            yield node

    for name, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        documents = [
            p["PolicyDocument"] for p in props.get("Policies", []) if isinstance(p, dict) and "PolicyDocument" in p
        ]
        documents += [p for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in document["Statement"]:
                for leaf in flatten(statement):
                    yield name, leaf


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_function_and_state_machine_has_its_own_written_out_role():
    for name, resource in RESOURCES.items():
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            props = resource["Properties"]
            assert "Role" in props, f"{name} has no Role: SAM would attach managed policies with Resource '*'"
            assert "Policies" not in props, f"{name}: Policies are ignored next to Role; put them on the role"
        if resource["Type"] == "AWS::IAM::Role":
            assert "ManagedPolicyArns" not in resource["Properties"], f"{name} attaches a managed policy"


def test_no_wildcard_grant_beyond_the_services_that_cannot_be_scoped():
    offending = []
    for name, statement in statements():
        if statement["Effect"] != "Allow":
            continue
        actions = {str(a) for a in as_list(statement["Action"])}
        if any("*" in action for action in actions):
            offending.append((name, statement.get("Sid"), "action wildcard", sorted(actions)))
        if "*" in as_list(statement.get("Resource")) and frozenset(actions) not in WILDCARD_ALLOWED:
            offending.append((name, statement.get("Sid"), "Resource '*'", sorted(actions)))
    assert offending == []


def _sub(value: Any) -> str:
    """A !Sub's text, with the input bucket's name (created or existing) written as ${InputBucket}."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        if isinstance(sub, list):
            return sub[0].replace("arn:${AWS::Partition}:s3:::${Bucket}", "${InputBucket.Arn}")
        return sub
    return str(value)


@pytest.mark.parametrize("role", ["IngestRole", "PollerRole", "CompleteRole"])
def test_object_access_is_limited_to_the_configured_prefixes(role):
    for _, statement in (s for s in statements() if s[0] == role):
        actions = {str(a) for a in as_list(statement["Action"])}
        if actions & {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion"}:
            for resource in as_list(statement["Resource"]):
                text = _sub(resource)
                assert text in ("${InputBucket.Arn}/${InputPrefix}*", "${OutputBucket.Arn}/${OutputPrefix}*"), (
                    f"{role}/{statement.get('Sid')} grants objects outside the configured prefix: {text}"
                )
                if actions & {"s3:PutObject", "s3:DeleteObject"}:
                    assert text.startswith("${OutputBucket.Arn}"), f"{role} may write the input bucket"


def test_event_sources_are_granted_on_their_own_queue_and_stream_only():
    grants = {(name, statement.get("Sid")): statement for name, statement in statements()}
    assert grants[("IngestRole", "IngestQueue")]["Resource"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert _sub(grants[("CompleteRole", "JobStream")]["Resource"]) == "${JobsTable.Arn}/stream/*"


@pytest.mark.parametrize("role", ["PollerRole", "CompleteRole"])
def test_roles_that_deliver_may_abort_a_failed_multipart_upload(role):
    # moto does not enforce IAM; in AWS an abort without this grant is AccessDenied and leaves the parts.
    granted = {
        str(a) for name, st in statements() if name == role for a in as_list(st["Action"]) if str(a).startswith("s3:")
    }
    assert {"s3:PutObject", "s3:AbortMultipartUpload"} <= granted


def test_the_public_webhook_has_a_concurrency_cap():
    props = RESOURCES["WebhookFunction"]["Properties"]
    assert props["ReservedConcurrentExecutions"] == {"Ref": "WebhookReservedConcurrency"}
    # NONE whenever the function exists (the !If only keeps `sam deploy --guided` quiet with webhooks off).
    assert props["FunctionUrlConfig"]["AuthType"] == {"Fn::If": ["UseWebhook", "NONE", "AWS_IAM"]}
    assert RESOURCES["WebhookFunction"]["Condition"] == "UseWebhook"


def test_presign_ttl_is_a_parameter_that_reaches_the_functions():
    assert TEMPLATE["Parameters"]["PresignTtlSeconds"]["MaxValue"] <= 7 * 24 * 3600
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["PRESIGN_TTL_SECONDS"] == {"Ref": "PresignTtlSeconds"}


def test_every_checkov_skip_says_why():
    for name, resource in RESOURCES.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(str(skip.get("comment", "")).strip()) > 40, f"{name}: skip {skip.get('id')} has no reason"


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


KEY = {"Fn::If": ["UseKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


def test_a_customer_key_when_set_encrypts_the_buckets_table_queues_and_logs():
    assert TEMPLATE["Conditions"]["UseKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}
    (table,) = _of_type("AWS::DynamoDB::Table").values()
    sse = table["Properties"]["SSESpecification"]
    assert sse["KMSMasterKeyId"] == KEY and sse["SSEType"] == {"Fn::If": ["UseKmsKey", "KMS", {"Ref": "AWS::NoValue"}]}
    for name, queue in _of_type("AWS::SQS::Queue").items():
        props = queue["Properties"]
        assert props["KmsMasterKeyId"] == KEY, name
        # Without the key, SQS-managed encryption; never both (CloudFormation refuses the pair).
        assert props["SqsManagedSseEnabled"] == {"Fn::If": ["UseKmsKey", {"Ref": "AWS::NoValue"}, True]}, name
    for name, group in _of_type("AWS::Logs::LogGroup").items():
        assert group["Properties"]["KmsKeyId"] == KEY, name
    for name in ("InputBucket", "OutputBucket"):  # the access-log bucket must stay SSE-S3 (S3's rule)
        condition, with_key, without = RESOURCES[name]["Properties"]["BucketEncryption"][
            "ServerSideEncryptionConfiguration"
        ]["Fn::If"]
        assert condition == "UseKmsKey", name
        assert with_key[0]["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": {"Ref": "KmsKeyArn"},
        }, name
        assert without[0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}, name


def test_with_a_customer_key_the_local_stack_encrypts_the_buckets_with_it(aws):
    import boto3

    from vlmwatch_local.cloud.provision import provision

    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    stack = provision(parameters={"KmsKeyArn": key})
    for bucket in (stack.input_bucket, stack.output_bucket):
        (rule,) = boto3.client("s3").get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}


def test_with_a_customer_key_every_function_may_use_it_only_through_the_stores():
    (policy,) = (r for r in RESOURCES.values() if r["Type"] == "AWS::IAM::ManagedPolicy")
    assert policy["Condition"] == "UseKmsKey"
    roles = {r["Ref"] if "Ref" in r else r["Fn::If"][1]["Ref"] for r in policy["Properties"]["Roles"]}
    function_roles = {r["Properties"]["Role"]["Fn::GetAtt"][0] for r in _of_type("AWS::Serverless::Function").values()}
    assert roles == function_roles
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"] == {"Ref": "KmsKeyArn"}
    services = [_sub(s) for s in statement["Condition"]["StringLike"]["kms:ViaService"]]
    assert services == [f"{svc}.${{AWS::Region}}.amazonaws.com" for svc in ("s3", "dynamodb", "sqs")]


def _denies_insecure_transport(document: dict[str, Any], arn_of: str) -> bool:
    for statement in document["Statement"]:
        if statement.get("Sid") == "DenyInsecureTransport" and statement["Effect"] == "Deny":
            resources = [r for r in as_list(statement["Resource"]) if arn_of in str(r)]
            if resources and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}:
                return True
    return False


def test_every_queue_and_bucket_refuses_plain_http():
    queue_policies = _of_type("AWS::SQS::QueuePolicy").values()
    for name in _of_type("AWS::SQS::Queue"):
        assert any(
            {"Ref": name} in p["Properties"]["Queues"]
            and _denies_insecure_transport(p["Properties"]["PolicyDocument"], name)
            for p in queue_policies
        ), f"{name} accepts plain http"
    bucket_policies = _of_type("AWS::S3::BucketPolicy").values()
    for name in _of_type("AWS::S3::Bucket"):
        assert any(
            p["Properties"]["Bucket"] == {"Ref": name}
            and _denies_insecure_transport(p["Properties"]["PolicyDocument"], name)
            for p in bucket_policies
        ), f"{name} accepts plain http"


def test_only_the_delivering_roles_may_write_under_the_output_prefix():
    (policy,) = (
        p for p in _of_type("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": "OutputBucket"}
    )
    (guard,) = (
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "OnlyDeliveryWritesResults"
    )
    assert guard["Effect"] == "Deny" and guard["Principal"] == "*" and guard["Action"] == "s3:PutObject"
    assert _sub(guard["Resource"]) == "${OutputBucket.Arn}/${OutputPrefix}*"
    allowed = {a["Fn::GetAtt"][0] for a in guard["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]}
    writers = {
        name
        for name, st in statements()
        if st["Effect"] == "Allow"
        and "s3:PutObject" in as_list(st["Action"])
        and any(_sub(r).startswith("${OutputBucket.Arn}") for r in as_list(st["Resource"]))
    }
    # The guard names exactly the roles granted the writes: no writer is locked out, nobody else gets in.
    assert allowed == writers == {"CompleteRole", "PollerRole"}
