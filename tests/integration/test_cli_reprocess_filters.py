"""`vlmwatch reprocess` by filter (--status, --rule, --since), on a named earlier configuration version
and another service tier: the new runs run with what was asked, and only the files the filters chose."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from helpers import drop, jobs, read_json, result_key, run_cli
from helpers import settle as settle_stack
from vlmwatch_local.cloud.provision import StackResources

V0_RULES = json.dumps([{"name": "invoices", "prefix": "invoices/", "agent": "invoice-reader:v0"}])


def cli(stack: StackResources, *args: str) -> tuple[int, str]:
    return run_cli(stack, *args)


def planned(out: str) -> set[str]:
    """The keys a dry run says it would run."""
    return {line.split("would run ", 1)[1].split(":", 1)[0] for line in out.splitlines() if "would run " in line}


def push(stack: StackResources, path, agent: str) -> None:
    path.write_text(
        json.dumps(
            {
                "rules": [{"name": "invoices", "prefix": "invoices/", "agent": agent}],
                "default": {"agent": "doc-extractor:v1"},
            }
        )
    )
    assert cli(stack, "config", "push", str(path))[0] == 0


def test_reprocess_by_status_rule_and_since_with_a_named_configuration_and_tier(stack, local, wire, clock, tmp_path):
    wire(ROUTING_RULES=V0_RULES)
    for key in ("invoices/a.txt", "invoices/b.txt", "notes/c.txt"):
        drop(stack, key, f"text of {key}".encode())
    drop(stack, "notes/broken.pdf", b"%PDF-1.4 not a pdf", "application/pdf")
    settle_stack(local, clock)
    mark = clock()
    clock.advance(10)
    drop(stack, "late/d.txt", b"dropped later")
    settle_stack(local, clock)
    outcomes = {j["key"]: (j["outcome"], json.loads(j["route"])["rule"]) for j in jobs(stack)}
    assert outcomes == {
        "invoices/a.txt": ("completed", "invoices"),
        "invoices/b.txt": ("completed", "invoices"),
        "notes/c.txt": ("completed", "default"),
        "notes/broken.pdf": ("failed", "default"),
        "late/d.txt": ("completed", "default"),
    }
    push(stack, tmp_path / "v1.json", "invoice-reader:v1")
    push(stack, tmp_path / "v2.json", "invoice-reader:v2")  # v2 is current; v1 is asked for by name below

    since = datetime.fromtimestamp(mark, UTC).isoformat()
    code, out = cli(stack, "reprocess", "--since", since, "--dry-run")
    assert code == 0 and planned(out) == {"late/d.txt"} and "with v2" in out
    code, out = cli(stack, "reprocess", "--status", "failed", "--dry-run")
    assert code == 0 and planned(out) == {"notes/broken.pdf"}
    code, out = cli(stack, "reprocess", "--rule", "invoices", "--since", since, "--dry-run")
    assert code == 0 and planned(out) == set() and "0 file(s)" in out  # both filters hold

    code, out = cli(stack, "reprocess", "--rule", "invoices", "--config-version", "1", "--service-tier", "flex")
    assert code == 0 and "2 file(s) to run again with v1, tier flex" in out and "started 2 run(s)" in out
    clock.advance(61)
    settle_stack(local, clock)

    second = {j["key"]: j for j in jobs(stack) if j.get("run") == 2}
    assert set(second) == {"invoices/a.txt", "invoices/b.txt"}  # nothing else was run again
    for key, row in second.items():
        route = json.loads(row["route"])
        assert (row["status"], row["outcome"]) == ("delivered", "completed")
        assert (route["rule"], route["agent"], route["config_version"], route["service_tier"]) == (
            "invoices",
            "invoice-reader:v1",
            1,
            "flex",
        )
        document = read_json(stack, result_key(key))  # the stable path shows the new run
        ran = document["ran"]
        assert (document["run"], ran["agent"], ran["config_version"], ran["service_tier"]) == (
            2,
            "invoice-reader:v1",
            1,
            "flex",
        )
    # The same request again: each file's newest run already ran with v1 on flex.
    code, out = cli(stack, "reprocess", "--rule", "invoices", "--config-version", "1", "--service-tier", "flex")
    assert code == 0 and "0 file(s) to run again" in out and out.count("already ran with v1") == 2

    code, out = cli(stack, "reprocess", "--rule", "invoices", "--config-version", "9")
    assert code == 2 and "9" in out
    assert cli(stack, "reprocess", "--rule", "invoices", "--service-tier", "turbo")[0] == 2
    code, out = cli(stack, "reprocess")
    assert code == 2 and "--status, --rule or --since" in out
