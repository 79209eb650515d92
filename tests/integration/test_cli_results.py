"""`vlmwatch config`, `history`, `get` and `query` against a stack the pipeline ran on."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from helpers import PDF_BYTES, drop, jobs, run_cli
from helpers import settle as settle_stack
from vlmwatch_local.cloud.provision import StackResources


def cli(stack: StackResources, *args: str) -> tuple[int, str]:
    return run_cli(stack, *args)


def settle(local, clock, rounds: int = 12) -> None:
    settle_stack(local, clock, rounds)


def test_config_push_is_validated_compared_and_versioned(stack, local, wire, clock, tmp_path: Path):
    wire()
    drop(stack, "invoices/a.txt", b"invoice one")
    drop(stack, "notes/b.txt", b"a note")
    settle(local, clock)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "x", "agent": "not a name"}], "defualt": {}}))
    code, out = cli(stack, "config", "push", str(bad))
    assert code == 2 and "not 'name' or 'name:version'" in out and "defualt" in out
    assert cli(stack, "config", "show")[1].startswith("v0: no configuration pushed")

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "invoices", "prefix": "invoices/", "agent": "invoice:v2"}]}))
    code, out = cli(stack, "config", "push", str(rules), "--dry-run")
    assert (
        code == 0 and "invoices/a.txt: rule default: agent doc-extractor:v1 -> rule invoices: agent invoice:v2" in out
    )
    assert "notes/b.txt: rule default: agent doc-extractor:v1 -> skip" in out  # no default in the new rules
    assert "dry run: nothing pushed" in out and cli(stack, "config", "history")[1].count("v1") == 0

    code, out = cli(stack, "config", "push", str(rules), "--note", "invoices on v2")
    assert code == 0 and "pushed v1" in out
    code, out = cli(stack, "config", "push", str(rules))
    assert code == 2 and "already in effect as v1" in out
    code, out = cli(stack, "config", "rollback", "1")
    assert code == 0 and "pushed v2 (rollback to v1)" in out
    code, out = cli(stack, "config", "history")
    assert code == 0 and "rollback to v1" in out and "invoices on v2" in out
    code, out = cli(stack, "config", "show", "--json")
    assert json.loads(out)["rules"][0]["agent"] == "invoice:v2"
    assert cli(stack, "config", "rollback", "7")[0] == 2


def test_history_get_and_query_answer_from_what_the_pipeline_wrote(stack, local, wire, clock, tmp_path: Path):
    wire()
    drop(stack, "scans/report.pdf", PDF_BYTES, "application/pdf")
    drop(stack, "scans/report.pdf", b"%PDF-1.4 not a pdf", "application/pdf")  # a second, broken version
    drop(stack, "scans/note.txt", b"one credit")
    settle(local, clock)
    rows = {(j["key"], j.get("outcome")) for j in jobs(stack)}
    assert rows == {("scans/report.pdf", "completed"), ("scans/report.pdf", "failed"), ("scans/note.txt", "completed")}

    code, out = cli(stack, "history", "scans/report.pdf", "--json")
    history = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and sorted(h["outcome"] for h in history) == ["completed", "failed"]
    assert all(h["config_version"] == 0 and h["ran"] == "agent doc-extractor:v1" for h in history)

    code, out = cli(stack, "get", "scans/note.txt", "--field", "file.text")
    assert code == 0 and json.loads(out) == "one credit"
    code, out = cli(stack, "get", "scans/note.txt", "--field", "file.nope")
    assert code == 2 and "no 'file.nope'" in out
    completed = next(h for h in history if h["outcome"] == "completed")
    code, out = cli(stack, "get", completed["job_id"][:10], "--out", str(tmp_path / "got"))
    assert code == 0
    saved = sorted(p.name for p in (tmp_path / "got").iterdir())
    assert "result.json" in saved and len(saved) >= 2  # the document and its artifacts
    assert json.loads((tmp_path / "got" / "result.json").read_text())["source"]["key"] == "scans/report.pdf"

    # Rows expire after ResultTtlDays; the documents stay, and history reads them.
    client = boto3.client("dynamodb")
    for h in history:
        client.delete_item(TableName=stack.table, Key={"job_id": {"S": h["job_id"]}})
    code, out = cli(stack, "history", "scans/report.pdf")
    assert code == 0, out
    assert out.count("(row expired)") == 2 and "completed" in out and "failed" in out

    cache = str(tmp_path / "index")
    code, out = cli(stack, "query", "SELECT key, status FROM results ORDER BY key, status", "--json", "--cache", cache)
    assert code == 0
    assert [(r["key"], r["status"]) for r in json.loads(out)] == [
        ("scans/note.txt", "completed"),
        ("scans/report.pdf", "completed"),
        ("scans/report.pdf", "failed"),
    ]
    code, out = cli(stack, "query", "SELECT nope FROM results", "--cache", cache)
    assert code == 2 and "query failed" in out


@pytest.mark.parametrize("args", [["history", "never/seen.txt"], ["get", "never/seen.txt"]])
def test_unknown_keys_exit_1(stack, args):
    assert cli(stack, *args)[0] == 1
