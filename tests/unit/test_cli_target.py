"""The CLI finds a deployment by stack name, or says exactly what to pass."""

from __future__ import annotations

import json

import boto3
import pytest

from vlmwatch_cli.target import Target, TargetError


def test_a_stack_name_is_enough(aws):
    template = {
        "Resources": {"Anything": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "InputBucketName": {"Value": "in-bucket"},
            "OutputBucketName": {"Value": "out-bucket"},
            "JobsTableName": {"Value": "jobs"},
            "IngestQueueUrl": {"Value": "https://sqs/ingest"},
            "OutputPrefix": {"Value": "done/"},
        },
    }
    boto3.client("cloudformation").create_stack(StackName="vlmwatch-prod", TemplateBody=json.dumps(template))

    target = Target.resolve("vlmwatch-prod", table="override")

    assert (target.input_bucket, target.output_bucket, target.ingest_queue_url) == (
        "in-bucket",
        "out-bucket",
        "https://sqs/ingest",
    )
    assert target.output_prefix == "done/"
    assert target.table == "override"  # an explicit name wins over the stack's


def test_no_stack_and_no_names_says_what_to_pass(monkeypatch):
    for name in ("VLMWATCH_INPUT_BUCKET", "VLMWATCH_OUTPUT_BUCKET", "VLMWATCH_TABLE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TargetError, match=r"pass --stack NAME, or --input-bucket \(or VLMWATCH_INPUT_BUCKET\)"):
        Target.resolve(None)


def test_an_unknown_stack_is_one_clear_error(aws):
    with pytest.raises(TargetError, match="cannot read stack 'nope'"):
        Target.resolve("nope")
