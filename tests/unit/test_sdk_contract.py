"""Every body our client sends is one the official SDK's own request models accept, and the emulator
rejects exactly what they reject. The SDK is a dev dependency only: it judges, it never runs in Lambda."""

from __future__ import annotations

import json
from typing import Any

import boto3
import httpx
import pytest

from helpers import PDF_BYTES, drop
from vlmwatch_local.cloud.loops import LocalAws

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SDK_EXECUTE_KEYS = {"model", "name", "batch", "inputs", "config", "metadata", "callback_url", "toolsets"}


def sdk_accepts(body: dict[str, Any]) -> bool:
    """Would ``VLMRun().agent.execute`` build this body? Validated with the SDK's own pydantic models."""
    from pydantic import ValidationError
    from vlmrun.client.types import AgentExecutionConfig, RequestMetadata
    from vlmrun.types import FileUrl, MessageContent

    if not set(body) <= SDK_EXECUTE_KEYS or body.get("batch") is not True:
        return False
    try:
        if "metadata" in body:
            metadata = RequestMetadata.model_validate(body["metadata"])
            if metadata.model_dump(exclude_none=True) != body["metadata"]:
                return False  # a field the SDK does not know would be dropped: not the SDK's shape
        if "config" in body:
            config = AgentExecutionConfig.model_validate(body["config"])
            if config.model_dump(exclude_none=True) != body["config"]:
                return False
        for value in (body.get("inputs") or {}).values():
            if isinstance(value, str):
                FileUrl(url=value)  # the docs' own form, inputs={"file": url}
            else:
                content = MessageContent.model_validate(value)
                dumped = json.loads(content.model_dump_json(exclude_none=True))
                if dumped != value and {**dumped, "image_url": value.get("image_url")} != value:
                    return False
    except ValidationError:
        return False
    return True


class Recorder(httpx.BaseTransport):
    def __init__(self, app) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self.bodies: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/agent/execute"):
            self.bodies.append(json.loads(request.content))
        return self._inner.handle_request(request)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"INPUT_MODE": "upload"},
        {"DEFAULT_AGENT_NAME": "", "DEFAULT_PROMPT": "Extract the total.", "DEFAULT_JSON_SCHEMA": '{"type": "object"}'},
        {"CALLBACK_URL": "https://hooks.example/vlmwatch", "WEBHOOK_SECRET": "vlmwatch/hook"},
    ],
    ids=["url", "upload", "prompt-and-schema", "webhook"],
)
def test_every_execute_body_the_client_sends_validates_against_the_sdk_models(stack, wire, emulator, env):
    boto3.client("secretsmanager").create_secret(Name="vlmwatch/hook", SecretString="s3cret")
    recorder = Recorder(emulator.app)
    wire(transport=recorder, **env)
    local = LocalAws(stack)
    drop(stack, "contract/a.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "contract/b.txt", b"plain text")

    local.pump_ingest()

    assert len(recorder.bodies) == 2
    for body in recorder.bodies:
        assert sdk_accepts(body), body
    assert len(emulator.executions) == 2  # and the (strict) emulator took them


@pytest.mark.parametrize(
    "inputs",
    [
        {"file": "https://bucket.s3.amazonaws.com/a.pdf?X-Amz-Signature=x"},
        {"file": {"type": "input_file", "file_id": "f-1"}},
        {"file": {"type": "input_file", "file_url": {"url": "https://example.com/a.pdf"}}},
        {"file": {"type": "input_file", "file_url": "https://example.com/a.pdf"}},  # what we used to send
        {"file": {"type": "image_url"}},
        {"file": {"type": "input_file"}},
        {"file": {"type": "document", "file_id": "f-1"}},
    ],
)
def test_the_emulator_rejects_exactly_what_the_sdk_rejects(emulator, inputs):
    body = {
        "name": "a:v1",
        "batch": True,
        "inputs": inputs,
        "metadata": {"environment": "prod", "allow_training": False},
    }
    client = httpx.Client(transport=httpx.WSGITransport(app=emulator.app), base_url="http://emulator/v1/")
    response = client.post("agent/execute", json=body, headers={"Authorization": f"Bearer {emulator.config.api_key}"})

    emulator_accepts = response.status_code != 422
    assert emulator_accepts == sdk_accepts(body), response.text
