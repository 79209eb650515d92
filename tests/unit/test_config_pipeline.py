"""Configuration versions through the pipeline: a push takes effect without a redeploy, every document says
which version it ran with and matches its published schema, and the results index answers for them."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import jsonschema
import pytest

from helpers import PDF_BYTES, drop, jobs, output_keys, read_json, result_key
from vlmwatch.adapters.config_store import ConfigStore
from vlmwatch.core.config import parse_config
from vlmwatch.core.results_index import INDEX_FOLDER
from vlmwatch_cli.results_query import run_query, sync_index

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = {
    "vlmwatch.result/v1": json.loads((DOCS / "vlmwatch.result.v1.schema.json").read_text()),
    "vlmwatch.error/v1": json.loads((DOCS / "vlmwatch.error.v1.schema.json").read_text()),
}


def settle(local, clock, rounds: int = 12) -> None:
    for _ in range(rounds):
        local.step()
        clock.advance(30)


def schema_of(fields: int) -> dict:
    # A real-sized extraction schema: forty described fields, over 4 KB for two of them.
    return {
        "type": "object",
        "properties": {
            f"field_{i}": {"type": "string", "description": f"what field {i} holds " * 3} for i in range(fields)
        },
    }


RULES = {
    "rules": [
        {"name": "invoices", "prefix": "invoices/", "prompt": "Extract the invoice.", "json_schema": schema_of(40)},
        {"name": "receipts", "prefix": "receipts/", "prompt": "Extract the receipt.", "json_schema": schema_of(40)},
        {"name": "scratch", "prefix": "tmp/", "skip": True, "reason": "scratch space"},
    ],
    "default": {"agent": "doc-extractor:v2"},
}


def every_document(stack) -> list[tuple[str, dict]]:
    return [(key, read_json(stack, key)) for key in output_keys(stack) if key.endswith(("/result.json", "/error.json"))]


def test_pushed_rules_over_4_kb_route_files_without_a_redeploy_and_documents_name_the_version(
    stack, local, wire, clock
):
    wire(DEFAULT_AGENT_NAME="doc-extractor:v1")
    drop(stack, "before.txt", b"routed by the template's parameters")
    settle(local, clock, rounds=6)

    text = json.dumps(RULES)
    assert len(text.encode()) > 4096
    pushed = ConfigStore(boto3.client("dynamodb"), stack.table).push(parse_config(text), note="rules v1")
    clock.advance(61)  # CONFIG_MAX_AGE_SECONDS: the functions' cached read ages out

    drop(stack, "invoices/march.txt", b"invoice INV-7 total 120")
    drop(stack, "other.txt", b"goes to the new default agent")
    drop(stack, "tmp/scratch.txt", b"skipped by the pushed rules")
    settle(local, clock)

    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["tmp/scratch.txt"]["status"] == "skipped"
    before = read_json(stack, result_key("before.txt"))
    invoice = read_json(stack, result_key("invoices/march.txt"))
    other = read_json(stack, result_key("other.txt"))
    assert (before["ran"]["agent"], before["ran"]["config_version"]) == ("doc-extractor:v1", 0)
    assert (invoice["ran"]["rule"], invoice["ran"]["config_version"]) == ("invoices", pushed.number)
    assert len(invoice["ran"]["json_schema"]["properties"]) == 40
    assert (other["ran"]["agent"], other["ran"]["config_version"]) == ("doc-extractor:v2", pushed.number)


def test_every_document_the_pipeline_writes_matches_its_published_schema(stack, local, wire, clock):
    wire()
    drop(stack, "a.txt", b"plain text")
    drop(stack, "scan.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf")
    settle(local, clock)

    documents = every_document(stack)
    assert {d["schema"] for _, d in documents} == set(SCHEMAS)  # both kinds were written
    assert len(documents) >= 6  # each version's own document and its copy at the stable path
    for key, document in documents:
        try:
            jsonschema.validate(document, SCHEMAS[document["schema"]])
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{key} does not match {document['schema']}: {exc.message} at {list(exc.absolute_path)}")


def test_query_over_the_index_returns_the_totals_of_the_documents_it_was_built_from(
    stack, local, wire, clock, tmp_path
):
    wire()
    for i in range(6):
        drop(stack, f"batch/{i}.txt", f"file {i} costs one credit".encode())
    drop(stack, "batch/two-pages.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "batch/broken.pdf", b"%PDF-1.4 not a pdf", "application/pdf")
    settle(local, clock)
    local.pump_stream()  # a replayed delivery overwrites its own record: still one row per job

    s3 = boto3.client("s3")
    records = [k for k in output_keys(stack) if INDEX_FOLDER in k]
    assert len(records) == len(jobs(stack)) == 8

    # What the documents themselves say, one per job (the version's own document).
    versions = [d for k, d in every_document(stack) if "/versions/" in k]
    credits = sum((d["execution"].get("usage") or {}).get("credits_used", 0) for d in versions if "response" in d)
    completed = sum(1 for d in versions if d["schema"] == "vlmwatch.result/v1")

    synced = sync_index(s3, stack.output_bucket, "results/", tmp_path / "index")
    assert synced.records == 8
    _, rows = run_query(
        "SELECT status, count(*), sum(credits) FROM results GROUP BY status ORDER BY status", tmp_path / "index"
    )
    assert rows == [("completed", completed, pytest.approx(credits)), ("failed", 8 - completed, None)]
    _, named = run_query("SELECT document_uri FROM results WHERE key = 'batch/broken.pdf'", tmp_path / "index")
    ((uri,),) = named  # the record names the document it was built from, and that document is there
    assert uri.startswith(f"s3://{stack.output_bucket}/results/batch/broken.pdf.vlmwatch/versions/")
    assert uri.endswith("/error.json") and read_json(stack, uri.split("/", 3)[3])["status"] == "failed"
