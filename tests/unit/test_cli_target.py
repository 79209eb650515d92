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


def test_no_stack_and_no_names_says_what_to_pass_for_what_the_command_needs(monkeypatch):
    for name in ("VLMWATCH_STACK", "VLMWATCH_INPUT_BUCKET", "VLMWATCH_OUTPUT_BUCKET", "VLMWATCH_TABLE"):
        monkeypatch.delenv(name, raising=False)
    target = Target.resolve(None)  # nothing is required until a command says what it uses
    with pytest.raises(TargetError, match=r"set VLMWATCH_STACK .*--table \(or VLMWATCH_TABLE\)$"):
        target.need("table")
    with pytest.raises(TargetError, match=r"--input-bucket \(or VLMWATCH_INPUT_BUCKET\)$"):
        target.need("input_bucket")


def test_an_unknown_stack_is_one_clear_error(aws):
    with pytest.raises(TargetError, match="cannot read stack 'nope': no such stack in us-east-1"):
        Target.resolve("nope")


def test_a_stack_env_file_names_the_deployment_and_how_to_reach_it(tmp_path, monkeypatch):
    monkeypatch.delenv("VLMWATCH_TABLE", raising=False)
    env_file = tmp_path / "local.env"
    env_file.write_text(
        "export AWS_ENDPOINT_URL=http://127.0.0.1:5999\nexport AWS_DEFAULT_REGION=eu-west-1\n"
        "export AWS_ACCESS_KEY_ID=local\nexport AWS_SECRET_ACCESS_KEY=local\n"
        "export VLMWATCH_TABLE=jobs-local\nexport VLMWATCH_DLQ_URL='http://127.0.0.1:5999/q/dlq'\n"
    )

    target = Target.resolve(str(env_file))

    assert (target.table, target.dlq_url) == ("jobs-local", "http://127.0.0.1:5999/q/dlq")
    client = target.client("dynamodb")
    assert client.meta.endpoint_url == "http://127.0.0.1:5999" and client.meta.region_name == "eu-west-1"


def test_every_output_the_cli_reads_from_a_stack_is_an_output_of_the_template():
    from vlmwatch_cli.target import _OUTPUTS
    from vlmwatch_local.cloud.provision import load_template

    declared = set(load_template()["Outputs"])

    assert set(_OUTPUTS) <= declared, f"the CLI reads outputs the template does not declare: {set(_OUTPUTS) - declared}"
