"""Provision what ``template.yaml`` declares, on moto (in-process ``mock_aws`` or a moto server).

Read from the template, not restated here: buckets (versioning, EventBridge notifications), queues
and their redrive policies, the job table (keys, indexes, stream, TTL), the EventBridge rule with
its pattern and targets, and (stepfunctions mode) the poller state machine's definition with its
substitutions, which the local stack runs itself (:mod:`.stepfunctions`). Intrinsic functions are
resolved with the parameter defaults (or overrides), which is all this template uses them for.
``tests/integration/test_provision.py`` checks the two stay in step.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from vlmwatch_local import ROOT

TEMPLATE = ROOT / "template.yaml"
# What ``!Ref AWS::NoValue`` resolves to: the property is left out, as CloudFormation does.
NO_VALUE = object()


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns ``!Ref x`` into ``{"Ref": x}`` and ``!Sub``/``!GetAtt``/... into ``Fn::*``."""


def _tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as data (a copy the caller may change). Parsed once per version of the file: the YAML
    parser is pure Python, and provisioning and every resolved condition used to parse it again."""
    stat = path.stat()
    return copy.deepcopy(_parsed(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    with path.open() as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@dataclass
class StackResources:
    """What :func:`provision` created: physical names by logical id, and a few conveniences to use them
    (drop a file, scan the job table, list the outputs, the functions' environment)."""

    region: str
    parameters: dict[str, str]
    buckets: dict[str, str] = field(default_factory=dict)
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL
    queue_arns: dict[str, str] = field(default_factory=dict)
    table: str = ""
    stream_arn: str = ""
    rules: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function ARN
    # stepfunctions mode: the poller state machine's ARN and its definition as deployed (else empty)
    state_machine_arn: str = ""
    state_machine: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def _s3(self) -> Any:
        # One client per stack: building a boto3 client costs more than the request it sends.
        return boto3.client("s3", region_name=self.region)

    @functools.cached_property
    def _table(self) -> Any:
        return boto3.resource("dynamodb", region_name=self.region).Table(self.table)

    @property
    def input_bucket(self) -> str:
        # ExistingInputBucket: the stack watches a bucket it did not create.
        return self.buckets.get("InputBucket") or self.parameters["ExistingInputBucket"]

    @property
    def output_bucket(self) -> str:
        return self.buckets["OutputBucket"]

    @property
    def ingest_queue_url(self) -> str:
        return self.queues["IngestQueue"]

    def drop(
        self, key: str, body: bytes, content_type: str | None = None, metadata: dict[str, str] | None = None
    ) -> str | None:
        """Put an object in the input bucket, as a user would; returns its version id."""
        kwargs: dict[str, Any] = {"Bucket": self.input_bucket, "Key": key, "Body": body, "Metadata": metadata or {}}
        if content_type:
            kwargs["ContentType"] = content_type
        return self._s3.put_object(**kwargs).get("VersionId")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job in the job table (a full scan: for tests and the local stack only); the request
        budget's rows (ids starting with "#") are not jobs."""
        table = self._table
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = table.scan(**kwargs)
            items += [item for item in page["Items"] if not str(item["job_id"]).startswith("#")]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def output_keys(self) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.output_bucket)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def environment(self) -> dict[str, str]:
        """The functions' environment as the template's Globals declare it, resolved for this stack."""
        template = load_template()
        variables = template["Globals"]["Function"]["Environment"]["Variables"]
        env = {name: str(self._resolve(value)) for name, value in variables.items()}
        # Set per function in the template (the functions that start or release executions); one process here.
        env["STATE_MACHINE_ARN"] = self.state_machine_arn
        return env

    def _resolve(self, value: Any) -> Any:
        return _Resolver(self).resolve(value)


class _Resolver:
    def __init__(self, stack: StackResources) -> None:
        self._stack = stack

    def condition(self, name: str) -> bool:
        """A template condition, evaluated with this stack's parameters."""
        conditions = load_template().get("Conditions", {})
        return bool(self.resolve(conditions[name]))

    def resolve(self, value: Any) -> Any:
        s = self._stack
        if isinstance(value, dict) and len(value) == 1:
            ((name, arg),) = value.items()
            if name == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if name == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if name == "Fn::Not":
                return not self.resolve(arg[0])
            if name == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if name == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if name == "Condition":
                return self.condition(arg)
            if name == "Ref":
                if arg in s.parameters:
                    return s.parameters[arg]
                if arg in s.buckets:
                    return s.buckets[arg]
                if arg in s.queues:
                    return s.queues[arg]
                if arg == "JobsTable":
                    return s.table
                if arg == "PollerStateMachine" and s.state_machine_arn:
                    return s.state_machine_arn
                if arg == "AWS::NoValue":
                    return NO_VALUE
                if arg.startswith("AWS::"):
                    return {"AWS::Region": s.region, "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}[arg]
                return arg
            if name == "Fn::GetAtt":
                logical, attr = arg
                if attr == "Arn" and logical in s.queue_arns:
                    return s.queue_arns[logical]
                if attr == "Arn" and logical in s.buckets:
                    return f"arn:aws:s3:::{s.buckets[logical]}"
                if attr == "StreamArn":
                    return s.stream_arn
                if attr == "Arn" and logical in s.functions:
                    return s.functions[logical]
                if logical in s.rules:
                    return s.rules[logical]
                raise KeyError(f"cannot resolve !GetAtt {logical}.{attr} locally")
            if name == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                variables = {} if isinstance(arg, str) else {k: self.resolve(v) for k, v in arg[1].items()}
                return re.sub(
                    r"\$\{([^}]+)\}",
                    lambda m: str(
                        variables[m.group(1)]
                        if m.group(1) in variables
                        else self.resolve(
                            {"Fn::GetAtt": m.group(1).split(".", 1)} if "." in m.group(1) else {"Ref": m.group(1)}
                        )
                    ),
                    text,
                )
        if isinstance(value, dict):
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}  # as CloudFormation drops them
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not NO_VALUE]
        return value


def provision(
    *,
    region: str = "us-east-1",
    parameters: dict[str, str] | None = None,
    endpoint_url: str | None = None,
    template_path: Path = TEMPLATE,
) -> StackResources:
    """Create the template's storage, queues, table and ingest rule; return their names."""
    template = load_template(template_path)
    params = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    params.update(parameters or {})
    stack = StackResources(region=region, parameters=params)
    resolver = _Resolver(stack)
    suffix = uuid.uuid4().hex[:8]
    kw: dict[str, Any] = {"region_name": region}
    if endpoint_url:
        kw["endpoint_url"] = endpoint_url
    s3 = boto3.client("s3", **kw)
    sqs = boto3.client("sqs", **kw)
    ddb = boto3.client("dynamodb", **kw)
    events = boto3.client("events", **kw)
    resources: dict[str, dict[str, Any]] = template["Resources"]

    def of_type(kind: str) -> list[tuple[str, dict[str, Any]]]:
        # Resources whose Condition is false for these parameters are not created, as in CloudFormation.
        return [
            (k, v.get("Properties", {}))
            for k, v in resources.items()
            if v["Type"] == kind and ("Condition" not in v or resolver.condition(v["Condition"]))
        ]

    for logical, props in of_type("AWS::S3::Bucket"):
        name = f"vlmwatch-{logical.lower()}-{suffix}"
        s3.create_bucket(Bucket=name)
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if props.get("BucketEncryption"):
            encryption = resolver.resolve(props["BucketEncryption"])  # KmsKeyArn set or not
            # CloudFormation says ServerSideEncryptionByDefault where the API says ApplyServerSideEncryptionByDefault.
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
                    **({"BucketKeyEnabled": r["BucketKeyEnabled"]} if "BucketKeyEnabled" in r else {}),
                }
                for r in encryption["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if props.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        stack.buckets[logical] = name

    # Dead-letter queues first: the others' redrive policies point at them.
    queues = of_type("AWS::SQS::Queue")
    queues.sort(key=lambda q: "RedrivePolicy" in q[1])
    for logical, props in queues:
        attrs = {
            "VisibilityTimeout": str(props.get("VisibilityTimeout", 30)),
            "MessageRetentionPeriod": str(props.get("MessageRetentionPeriod", 345600)),
        }
        if "RedrivePolicy" in props:
            policy = resolver.resolve(props["RedrivePolicy"])
            attrs["RedrivePolicy"] = json.dumps(policy)
        url = sqs.create_queue(QueueName=f"vlmwatch-{logical}-{suffix}", Attributes=attrs)["QueueUrl"]
        stack.queues[logical] = url
        stack.queue_arns[logical] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    for logical, props in of_type("AWS::DynamoDB::Table"):
        name = f"vlmwatch-{logical}-{suffix}"
        args: dict[str, Any] = {
            "TableName": name,
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("StreamSpecification"):
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        if props.get("SSESpecification"):
            args["SSESpecification"] = {"Enabled": props["SSESpecification"].get("SSEEnabled", False)}
        description = ddb.create_table(**args)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        stack.table = name
        stack.stream_arn = description.get("LatestStreamArn", "")

    for logical, props in of_type("AWS::Serverless::StateMachine"):
        # Nothing is created in moto: the local stack runs the definition itself, on its own clock.
        account = f"arn:aws:{{}}:{region}:123456789012"
        stack.functions = {
            name: f"{account.format('lambda')}:function:vlmwatch-{name.removesuffix('Function').lower()}-{suffix}"
            for name, res in resources.items()
            if res["Type"] == "AWS::Serverless::Function"
        }
        stack.state_machine_arn = f"{account.format('states')}:stateMachine:vlmwatch-{logical}-{suffix}"
        stack.state_machine = state_machine_definition(props, resolver)

    for logical, props in of_type("AWS::Events::Rule"):
        if "EventPattern" not in props:
            continue
        name = f"vlmwatch-{logical}-{suffix}"
        pattern = resolver.resolve(props["EventPattern"])
        arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")["RuleArn"]
        stack.rules[logical] = arn
        targets = [{"Id": t["Id"], "Arn": resolver.resolve(t["Arn"])} for t in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, Targets=targets)
    return stack


def state_machine_definition(props: dict[str, Any], resolver: _Resolver) -> dict[str, Any]:
    """A state machine's ASL as CloudFormation deploys it: ``DefinitionUri`` with its
    ``DefinitionSubstitutions`` resolved for this stack."""
    substitutions = {k: str(v) for k, v in resolver.resolve(props.get("DefinitionSubstitutions", {})).items()}
    text = (ROOT / props["DefinitionUri"]).read_text()
    return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: substitutions[m.group(1)], text))


def deployed_state_machine(parameters: dict[str, str], functions: dict[str, str]) -> dict[str, Any]:
    """The poller state machine's definition for these template parameters and function ARNs (by logical id)."""
    template = load_template()
    params = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    stack = StackResources(region="us-east-1", parameters={**params, **parameters}, functions=functions)
    return state_machine_definition(template["Resources"]["PollerStateMachine"]["Properties"], _Resolver(stack))
