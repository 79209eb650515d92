"""Runs: reprocess completed files with a new configuration, keep every run, compare them."""

from __future__ import annotations

import json

import boto3
import pytest

from helpers import drop, jobs, output_keys, read_json, result_key, run_cli
from helpers import settle as settle_stack
from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch.core.identity import ObjectVersion
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch_local.cloud.provision import StackResources


def cli(stack: StackResources, *args: str) -> tuple[int, str]:
    return run_cli(stack, *args)


def settle(local, clock, rounds: int = 14) -> None:
    settle_stack(local, clock, rounds)


@pytest.mark.long(seconds=15)
def test_reprocessing_50_files_with_a_new_prompt_keeps_the_old_runs_and_moves_the_stable_paths(
    stack, local, wire, emulator, clock, tmp_path
):
    wire()
    keys = [f"batch/{i:02d}.txt" for i in range(50)]
    for key in keys:
        drop(stack, key, f"document {key}".encode())
    settle(local, clock)
    assert {j["outcome"] for j in jobs(stack)} == {"completed"}

    rules = tmp_path / "v2.json"
    rules.write_text(json.dumps({"default": {"prompt": "Summarise the document in one line."}}))
    assert cli(stack, "config", "push", str(rules))[0] == 0
    code, out = cli(stack, "reprocess", f"s3://{stack.input_bucket}/batch/", "--dry-run")
    assert code == 0 and "50 file(s) to run again with v1; their last runs used 50 credits" in out

    code, out = cli(stack, "reprocess", f"s3://{stack.input_bucket}/batch/", "--yes")
    assert code == 0 and "started 50 run(s)" in out
    # The same reprocess again before anything ran: the same 50 runs are asked for, none starts twice.
    assert cli(stack, "reprocess", f"s3://{stack.input_bucket}/batch/", "--yes")[0] == 0
    clock.advance(61)
    settle(local, clock)

    rows = jobs(stack)
    assert len(rows) == 100 and {j["status"] for j in rows} == {"delivered"}
    assert sorted(j.get("run", 1) for j in rows) == [1] * 50 + [2] * 50
    assert len(emulator.executions) == 100  # one execution per run, whatever arrived twice
    for key in keys[:5]:
        stable = read_json(stack, result_key(key))
        assert (stable["run"], stable["ran"]["config_version"], stable["ran"]["prompt"]) == (
            2,
            1,
            "Summarise the document in one line.",
        )
    kept = [k for k in output_keys(stack) if k.endswith("/result.json") and "/versions/" in k]
    assert len(kept) == 100  # run 1's documents stay where they were; run 2's are beside them
    assert sum("/runs/2/" in k for k in kept) == 50

    # Once more with the same configuration: every file's newest run already ran with it.
    code, out = cli(stack, "reprocess", f"s3://{stack.input_bucket}/batch/")
    assert code == 0 and "0 file(s) to run again" in out and "already ran with v1" in out

    code, out = cli(stack, "compare", "--prefix", "batch/", "--runs", "1", "2", "--json")
    report = json.loads(out)
    assert code == 0 and (report["files"], report["compared"]) == (50, 50)
    assert report["fields"]["prompt"]["differ"] == 50  # the field the new configuration changed
    assert report["fields"]["file.sha256"]["agree"] == 50  # the same input, the same extraction of it
    code, out = cli(stack, "compare", "--prefix", "batch/", "--configs", "0", "1")
    assert code == 0 and "50 of 50 file(s) compared" in out

    code, out = cli(stack, "history", "batch/00.txt", "--json")
    assert sorted((h["run"], h["config_version"]) for h in map(json.loads, out.splitlines())) == [(1, 0), (2, 1)]


def _job(stack: StackResources, run: int, version: ObjectVersion) -> Job:
    return Job(
        job_id=f"{run:040x}", bucket=stack.input_bucket, key="k.txt", version_id=version.version_id, run=run,
        status=Status.FAILED, created_at=1_900_000_000, updated_at=1_900_000_000,
    )  # fmt: skip


def test_an_older_run_finishing_last_never_replaces_a_newer_one(stack):
    writer = OutputWriter(boto3.client("s3"), stack.output_bucket, "results/")
    version = ObjectVersion.of("v1", None)
    run2, run3 = _job(stack, 2, version), _job(stack, 3, version)
    stable = "results/k.txt.vlmwatch/error.json"

    writer.put_error(run3, status="failed", message="run three", now=1)
    writer.publish_latest(run3, lambda: version)
    writer.put_error(run2, status="failed", message="run two, finishing last", now=2)
    writer.publish_latest(run2, lambda: version)
    assert read_json(stack, stable)["run"] == 3

    # The race: run 2 has chosen its own document and is about to copy it when run 3 writes and publishes
    # its own; run 2's copy then lands last. Asking again after the copy puts run 3 back.
    other = ObjectVersion.of("v2", None)
    run2b, run3b = _job(stack, 2, other), _job(stack, 3, other)
    s3 = boto3.client("s3")
    racing = OutputWriter(s3, stack.output_bucket, "results/")
    writer.put_error(run2b, status="failed", message="two", now=3)
    raced = False

    def run3_overtakes(params, **_):
        nonlocal raced
        if not raced and "/runs/2/" in str(params.get("CopySource")):
            raced = True
            writer.put_error(run3b, status="failed", message="three", now=4)
            writer.publish_latest(run3b, lambda: other)

    s3.meta.events.register("provide-client-params.s3.CopyObject", run3_overtakes)
    racing.publish_latest(run2b, lambda: other)
    assert raced and read_json(stack, stable)["error"]["message"] == "three"


def test_a_file_whose_first_run_used_the_current_configuration_is_not_run_again(stack, local, wire, clock, tmp_path):
    wire()
    rules = tmp_path / "v1.json"
    rules.write_text(json.dumps({"default": {"agent": "doc-extractor:v2"}}))
    assert cli(stack, "config", "push", str(rules))[0] == 0
    drop(stack, "fresh/a.txt", b"ran with v1 on upload")
    settle(local, clock)
    (job,) = jobs(stack)
    assert job["status"] == "delivered" and json.loads(job["route"])["config_version"] == 1

    code, out = cli(stack, "reprocess", "fresh/a.txt")
    assert code == 0 and "already ran with v1" in out and "0 file(s) to run again" in out


def test_artifacts_already_written_are_found_again_whatever_their_extension(stack):
    from vlmwatch.adapters.vlmrun.models import ArtifactStream

    writer = OutputWriter(boto3.client("s3"), stack.output_bucket, "results/")
    job = _job(stack, 2, ObjectVersion.of("v1", None)).model_copy(update={"execution_id": "exec-1"})
    for object_id, content_type in (("url_abcdef", "text/plain"), ("img_123456", "image/png")):
        writer.put_artifact_stream(job, ArtifactStream(object_id, content_type, 3, iter([b"abc"])), max_bytes=10)
    # "url_abcdef.url.txt" has two dots: a retried delivery must still know it has it (no second download).
    assert set(writer.written_artifacts(job, "exec-1")) == {"url_abcdef", "img_123456"}
