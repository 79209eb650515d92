"""The official vlmrun SDK, used as a client, works against the emulator (served over real HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from vlmwatch_local.emulator import Emulator, EmulatorConfig

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorConfig())
    server = make_server("127.0.0.1", 0, emulator.app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}/v1"
    emulator.config.public_url = base
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield emulator, base
    server.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sdk_uploads_executes_polls_and_downloads_artifacts(served):
    from vlmrun.client import VLMRun
    from vlmrun.client.types import AgentExecutionConfig, RequestMetadata

    emulator, base = served
    client = VLMRun(api_key=emulator.config.api_key, base_url=base, max_retries=1)  # checks GET /health

    uploaded = client.files.upload(SAMPLES / "invoice.pdf", method="direct")
    presigned = client.files.upload(SAMPLES / "photo.png", method="presigned-url")
    assert uploaded.bytes == (SAMPLES / "invoice.pdf").stat().st_size
    assert presigned.bytes == (SAMPLES / "photo.png").stat().st_size

    execution = client.agent.execute(
        name="invoice-extractor:v1",
        inputs={"file": {"type": "input_file", "file_id": uploaded.id}},
        metadata=RequestMetadata(allow_training=False),
    )
    assert execution.status == "enqueued"
    inline = client.agent.execute(
        inputs={"file": {"type": "input_file", "file_id": presigned.id}},
        config=AgentExecutionConfig(prompt="Describe the image."),
    )
    for _ in range(3):
        execution = client.executions.get(execution.id)
    assert execution.status == "completed"
    assert execution.response["file"]["pages"] == 2
    assert execution.usage.credits_used == 2

    for _ in range(3):
        inline = client.executions.get(inline.id)
    assert inline.response["file"]["width"] == 320 and inline.response["file"]["height"] == 200

    listing = client.artifacts.list(execution_id=execution.id)
    assert {item.object_id[:4] for item in listing.items} == {"img_", "doc_"}
    pdf_path = client.artifacts.get(execution_id=execution.id, object_id=execution.response["artifacts"]["document"])
    assert Path(pdf_path).read_bytes() == (SAMPLES / "invoice.pdf").read_bytes()
    image = client.artifacts.get(execution_id=execution.id, object_id=execution.response["artifacts"]["preview"])
    assert image.size == (480, 160)

    assert {e.id for e in client.executions.list(limit=10)} == {execution.id, inline.id}
    assert emulator.requests["POST /v1/agent/execute"] == 2


def test_sdk_sees_api_errors_as_its_own_exceptions(served):
    from vlmrun.client import VLMRun
    from vlmrun.client.exceptions import AuthenticationError, ResourceNotFoundError

    emulator, base = served
    with pytest.raises(AuthenticationError):
        VLMRun(api_key="wrong", base_url=base, max_retries=1)
    client = VLMRun(api_key=emulator.config.api_key, base_url=base, max_retries=1)
    with pytest.raises(ResourceNotFoundError, match="not found"):
        client.executions.get("does-not-exist")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sdk_sees_the_accounts_bad_days_as_its_own_exceptions(served):
    from vlmrun.client import VLMRun
    from vlmrun.client.exceptions import APIError, AuthenticationError, ServerError

    emulator, base = served
    client = VLMRun(api_key=emulator.config.api_key, base_url=base, max_retries=1)
    emulator.revoke_key()
    with pytest.raises(AuthenticationError):
        client.executions.list(limit=1)
    emulator.restore_key()

    emulator.config.credits_executions = 0
    with pytest.raises(APIError, match="Insufficient credits") as refused:
        client.agent.execute(name="a:v1", inputs={"file": f"{base}/health"})
    assert refused.value.http_status == 402
    assert emulator.executions == {}
    emulator.top_up()

    emulator.outage(60)
    with pytest.raises(ServerError):
        client.executions.list(limit=1)
    emulator.outage(0)
    assert client.executions.list(limit=1) == []
