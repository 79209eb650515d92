"""Artifacts are bounded and budgeted: only what VLM Run lists is fetched, at most MAX_ARTIFACTS, and a
429 at delivery makes the delivery wait on its row instead of failing the stream batch."""

from __future__ import annotations

from collections import Counter

import boto3
import httpx

from helpers import PDF_BYTES, drop, jobs, read_json, result_key
from vlmwatch_local.cloud.loops import LocalAws


def settle(local: LocalAws, clock, rounds: int = 20) -> None:
    for _ in range(rounds):
        local.step()
        if jobs(local.stack) and all(j["status"] == "delivered" for j in jobs(local.stack)):
            return
        clock.advance(600)


def test_2000_artifact_ids_in_a_response_give_at_most_the_cap(stack, wire, emulator, clock):
    wire()
    local = LocalAws(stack)
    drop(stack, "many.txt", b"a response full of artifact ids")
    local.pump_ingest()
    ((execution_id, execution),) = emulator.executions.items()
    ids = [f"img_{i:06x}" for i in range(2000)]
    for object_id in ids:
        emulator.artifacts[(execution_id, object_id)] = (b"\x89PNG small", "image/png")
    # ...and five strings that only look like artifact ids: VLM Run has no such artifacts for this execution.
    lookalikes = [f"doc_{i:06x}" for i in range(5)]
    assert execution.response is not None
    execution.response["pages"] = [{"figure": object_id} for object_id in ids] + [{"quote": s} for s in lookalikes]

    settle(local, clock)

    document = read_json(stack, result_key("many.txt"))
    assert len(document["artifacts"]) == 100  # MAX_ARTIFACTS' default
    assert emulator.requests["GET /v1/artifacts"] == 100  # one download each, no more
    assert emulator.requests["GET /v1/artifacts/list"] == 1
    reasons = Counter(
        "cap"
        if "MAX_ARTIFACTS" in m["error"]
        else "unlisted"
        if "artifact list does not have it" in m["error"]
        else "?"
        for m in document["missing_artifacts"]
    )
    assert reasons == {"cap": 2001 - 100, "unlisted": 5}  # the preview card and 2,000 ids, 100 copied
    assert {m["object_id"] for m in document["missing_artifacts"] if "artifact list" in m["error"]} == set(lookalikes)


class ArtifactRateLimited(httpx.BaseTransport):
    """The emulator, except that the first download of a ``doc_`` artifact is answered 429."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_document = request.url.path == "/v1/artifacts" and request.url.params["object_id"].startswith("doc_")
        if is_document and not self.refused:
            self.refused += 1
            body = {"error": {"message": "Rate limit exceeded.", "type": "rate_limit_error", "id": "req_1"}}
            return httpx.Response(429, headers={"Retry-After": "30"}, json=body)
        return self.inner.handle_request(request)


def test_a_429_at_delivery_waits_on_the_row_and_the_document_lands_later_once(stack, wire, emulator, clock):
    transport = ArtifactRateLimited(httpx.WSGITransport(app=emulator.app))
    wire(transport=transport)
    local = LocalAws(stack)
    drop(stack, "slow.pdf", PDF_BYTES, "application/pdf")  # two artifacts: a preview card and the document
    local.pump_ingest()
    for _ in range(10):
        clock.advance(60)
        local.run_poller()
        local.pump_stream()
        if transport.refused:
            break

    (job,) = jobs(stack)
    assert transport.refused == 1
    assert job["status"] == "completed" and job["last_poll_error"].startswith("delivery waiting")
    assert local.parked == []  # the stream batch succeeded: nothing for the failed-deliveries queue
    failed = boto3.client("sqs").receive_message(QueueUrl=stack.queues["FailedDeliveriesQueue"])
    assert "Messages" not in failed

    settle(local, clock)

    (job,) = jobs(stack)
    assert job["status"] == "delivered" and local.parked == []
    document = read_json(stack, result_key("slow.pdf"))
    assert sorted(a["object_id"][:4] for a in document["artifacts"]) == ["doc_", "img_"]
    assert document["missing_artifacts"] == []
    # The preview card written before the 429 was kept, not fetched again; the document was fetched once.
    assert emulator.requests["GET /v1/artifacts"] == 2
    assert job.get("delivery_attempts", 0) == 0  # it waited; it never failed
