"""`vlmwatch get KEY --version V --run N`: any run of any version, not only the newest job."""

from __future__ import annotations

import json

from helpers import drop, jobs, run_cli
from helpers import settle as settle_stack
from vlmwatch_local.cloud.provision import StackResources

KEY = "runs/k.txt"


def cli(stack: StackResources, *args: str) -> tuple[int, str]:
    return run_cli(stack, *args)


def field(stack: StackResources, *args: str) -> object:
    code, out = cli(stack, "get", *args)
    assert code == 0, out
    return json.loads(out)


def test_get_picks_a_run_of_a_version_by_number(stack, local, wire, clock, tmp_path):
    wire()
    first = drop(stack, KEY, b"first upload")
    settle_stack(local, clock)
    rules = tmp_path / "v1.json"
    rules.write_text(json.dumps({"default": {"agent": "doc-extractor:v2"}}))
    assert cli(stack, "config", "push", str(rules))[0] == 0
    assert cli(stack, "reprocess", KEY)[0] == 0
    clock.advance(61)
    settle_stack(local, clock)

    assert field(stack, KEY, "--run", "1", "--field", "agent") == "doc-extractor:v1"
    assert field(stack, KEY, "--run", "2", "--field", "agent") == "doc-extractor:v2"
    assert field(stack, KEY, "--field", "agent") == "doc-extractor:v2"  # no flags: the newest run
    run2 = next(j for j in jobs(stack) if j.get("run") == 2)

    second = drop(stack, KEY, b"second upload")  # a new version: run 1 of it, with v1
    settle_stack(local, clock)
    assert field(stack, KEY, "--field", "file.text") == "second upload"
    assert field(stack, KEY, "--run", "1", "--field", "file.text") == "second upload"
    code, out = cli(stack, "get", KEY, "--run", "2")  # the newest version has one run
    assert code == 1 and "no --run 2 of" in out and "vlmwatch history" in out
    assert field(stack, KEY, "--version", str(first), "--run", "1", "--field", "agent") == "doc-extractor:v1"
    assert field(stack, KEY, "--version", str(first), "--field", "agent") == "doc-extractor:v2"  # its newest run
    assert field(stack, f"{KEY}?versionId={first}", "--run", "1", "--field", "file.text") == "first upload"
    # Named by a job id: that job's version, whatever was uploaded since.
    assert field(stack, run2["job_id"][:12], "--run", "1", "--field", "file.text") == "first upload"
    document = field(stack, KEY, "--version", str(second), "--json")
    assert isinstance(document, dict) and (document["run"], document["source"]["version_id"]) == (1, second)
    assert cli(stack, "get", KEY, "--run", "0")[0] == 2
