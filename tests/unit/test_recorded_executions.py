"""Issue 19 item 1, the "or recorded" half: an execution another job recorded (an orphan, or the execution it
had before a `vlmwatch retry`) is never adopted by this job, whatever evidence is offered for it."""

from __future__ import annotations

import json
import logging

from test_hostile_input import LoseResponses, hooked, post, settle  # noqa: F401 - hooked is a fixture used by name

from helpers import drop, jobs, read_json, result_key
from vlmwatch.runtime import wiring


def test_another_jobs_recorded_orphan_offered_as_evidence_is_refused_and_the_job_submits_anew(
    hooked,  # noqa: F811
    emulator,
    stack,
    clock,
    caplog,
):
    # b.txt runs normally; a.txt's POST timed out (ambiguous), so a.txt waits for evidence.
    transport = LoseResponses(emulator.app, {"a.txt"}, arrives=False)
    local, _ = hooked(transport)
    emulator.config.echo_inputs = False  # nothing echoed: neither the input nor the session tells them apart
    emulator.config.status_sequence = ["running", "completed"]
    drop(stack, "b.txt", b"bravo contents")
    drop(stack, "a.txt", b"alpha contents")
    local.pump_ingest()
    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["a.txt"]["status"] == "received" and rows["a.txt"]["ambiguous_attempts"] == [1]
    b_tracked = emulator.executions[rows["b.txt"]["execution_id"]]
    b_query = b_tracked.request["callback_url"].split("?", 1)[1]
    a_query = transport.lost["a.txt"]["callback_url"].split("?", 1)[1]  # a.txt's genuine URL (job, attempt, token)

    # A second execution of b.txt's request (a duplicate VLM Run made, say), called back to b.txt's URL:
    # b.txt records it as its orphan.
    orphan = emulator.create_execution({k: v for k, v in b_tracked.request.items() if k != "callback_url"}, {})
    orphan_body = json.dumps(orphan.to_json()).encode()
    assert json.loads(post(local, orphan_body, b_query)["body"])["status"] == "orphan"
    assert {j["key"]: j for j in jobs(stack)}["b.txt"]["orphan_execution_ids"] == [orphan.id]

    # The probe: b.txt's recorded orphan, genuinely signed, sent to a.txt's callback URL (the signature
    # covers only the body; the URL's token is a.txt's own).
    gets = dict(emulator.requests)
    with caplog.at_level(logging.WARNING):
        answer = post(local, orphan_body + b" ", a_query)  # another body: not a replay of b.txt's callback

    assert json.loads(answer["body"]) == {"status": "refused"}
    refusals = [r for r in caplog.records if r.getMessage().startswith("evidence refused")]
    b_job = {j["key"]: j for j in jobs(stack)}["b.txt"]["job_id"]
    assert [(r.getMessage(), getattr(r, "owner", None)) for r in refusals] == [
        ("evidence refused: another job tracks or recorded this execution", b_job)
    ]
    assert dict(emulator.requests) == gets  # refused by its mark alone: no request to VLM Run
    # The sweeper's path (an execution found by its echoed input) asks the same question of the same mark.
    a_job = wiring.job_store().get(a_row_id := {j["key"]: j for j in jobs(stack)}["a.txt"]["job_id"])
    assert a_job is not None and a_job.job_id == a_row_id
    assert wiring.submitter().evidence.refusal(a_job, wiring.vlmrun_client().get_execution(orphan.id), 1) == (
        "another job recorded this execution (an orphan or an earlier execution of it)"
    )
    a_row = {j["key"]: j for j in jobs(stack)}["a.txt"]
    assert a_row["status"] == "received" and "execution_id" not in a_row

    # No evidence for a.txt's own attempt ever comes: it submits anew and gets its own document.
    settle(local, clock)
    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["a.txt"]["execution_id"] not in (orphan.id, b_tracked.id) and rows["a.txt"]["attempts"] == 2
    assert read_json(stack, result_key("a.txt"))["response"]["file"]["text"] == "alpha contents"
    assert read_json(stack, result_key("b.txt"))["response"]["file"]["text"] == "bravo contents"


def test_a_retried_jobs_earlier_execution_is_marked_as_that_jobs(local, stack):
    from vlmwatch.core.job import Job
    from vlmwatch.core.lifecycle import Status

    store = wiring.job_store()
    failed = Job(
        job_id="f" * 40,
        bucket=stack.input_bucket,
        key="r.txt",
        status=Status.FAILED,
        execution_id="exec-before-retry",
        attempts=1,
        created_at=store.now(),
        updated_at=store.now(),
    )
    assert store.create(failed)

    assert store.reopen(failed, due_at=store.now())

    row = store.get(failed.job_id)
    assert row is not None and row.previous_execution_ids == ["exec-before-retry"] and row.execution_id is None
    assert store.owners.owner("exec-before-retry") == failed.job_id  # what refusal reads for any other job
    assert store.find_by_execution("exec-before-retry") is None  # the index no longer names it
