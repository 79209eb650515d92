"""A poller run sized by the request budget: pages of due jobs while the window's requests can serve them."""

from __future__ import annotations

import boto3
import pytest

from helpers import jobs
from vlmwatch.adapters.dynamo import deserialize_item, serialize_item
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.throttle import RequestBudget
from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import Status
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.loops import LocalAws
from vlmwatch_local.emulator.state import Execution

AGENT = "doc-extractor:v1"
GET = "GET /v1/agent/executions/<exec_id>"
LIST = "GET /v1/agent/executions"


def seed(stack, emulator, clock, count: int, *, status: Status = Status.SUBMITTED, due: int, plan=("completed",)):
    """``count`` jobs straight into the table, due from ``due`` on (one second apart, in that order), each with
    its execution at the emulator (completed: one artifact; or running). Returns their ids, oldest due first."""
    s3 = boto3.client("s3")
    store = wiring.job_store()
    ids = []
    for i in range(count):
        key = f"seeded/{status.value}-{due}-{i:03d}.pdf"
        put = s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"%PDF seeded")
        version = ObjectVersion.of(put.get("VersionId"), put["ETag"])
        job_id = job_id_for(stack.input_bucket, key, version)
        execution_id = f"exec-{status.value}-{due}-{i:03d}"
        artifact = f"img_{i:06x}"
        emulator.executions[execution_id] = Execution(
            id=execution_id,
            name=AGENT,
            created_at=clock() - 600 + i,  # the oldest due first is the oldest started
            plan=list(plan),
            outcome="completed",
            request={"name": AGENT, "batch": True, "inputs": {"file": f"s3://{stack.input_bucket}/{key}"}},
            completed_at=clock() - 300,
            response={"summary": "seeded", "artifacts": {"preview": artifact}},
        )
        emulator.artifacts[(execution_id, artifact)] = (b"\xff\xd8seeded", "image/jpeg")
        job = Job(
            job_id=job_id,
            bucket=stack.input_bucket,
            key=key,
            version_id=version.version_id,
            etag=version.etag,
            status=status,
            remote_status="completed" if status == Status.COMPLETED else "enqueued",
            execution_id=execution_id,
            attempts=1,
            deadline_at=int(clock()) + 3600,
            created_at=int(clock()) - 601,
            updated_at=int(clock()) - 600,
            submitted_at=int(clock()) - 600 + i,
            last_poll_error="delivery waiting: the request budget for this window is spent"
            if status == Status.COMPLETED
            else None,
        )
        assert store.create(job, due_at=due + i)
        ids.append(job_id)
    return ids


def budget_used(stack, clock) -> int:
    key = serialize_item({"job_id": f"#budget#{int(clock() // 60)}"})
    item = boto3.client("dynamodb").get_item(TableName=stack.table, Key=key).get("Item")
    return int(deserialize_item(item)["used"]) if item else 0


def rows(stack) -> dict[str, dict]:
    return {r["job_id"]: r for r in jobs(stack)}


@pytest.fixture
def budgeted(stack, wire, clock):
    # One job at a time: in-process moto does not make concurrent conditional updates atomic (DynamoDB does).
    def make(**env: str) -> LocalAws:
        wire(POLLER_CONCURRENCY="1", **env)
        return LocalAws(stack)

    return make


def test_a_run_takes_pages_until_its_polls_and_their_deliveries_fill_the_window(stack, emulator, clock, budgeted):
    local = budgeted(REQUESTS_PER_MINUTE="30", POLLER_MAX_JOBS="4", LIST_POLL_MIN_JOBS="0")
    now = int(clock())
    backlog = seed(stack, emulator, clock, 40, due=now - 3600)

    summary = local.run_poller()

    # 30 requests: a status GET and the delivery it sets off (the artifact list and a download) per job.
    assert summary["claimed"] == 10 and summary["requests"] == 30 and summary["stopped"] == "budget"
    assert summary["pages"] == 4  # the window's put-off work (none), then pages of 4, 4 and 2 of 4
    assert emulator.requests[GET] == 10
    local.pump_stream()
    after = rows(stack)
    taken = [job_id for job_id in backlog if after[job_id]["status"] == "delivered"]
    assert taken == backlog[:10]  # the oldest first, every one of them delivered within the same minute
    assert budget_used(stack, clock) == 30 and emulator.requests["GET /v1/artifacts"] == 10
    # What did not fit was never claimed: due as it was, for the next run.
    for job_id in backlog[10:]:
        assert after[job_id]["status"] == "submitted" and after[job_id]["next_poll_at"] <= now - 3600 + 40


def test_finished_jobs_put_off_to_this_window_go_before_older_polls(stack, emulator, clock, budgeted):
    local = budgeted(REQUESTS_PER_MINUTE="12", POLLER_MAX_JOBS="4", LIST_POLL_MIN_JOBS="0")
    now = int(clock())
    backlog = seed(stack, emulator, clock, 20, due=now - 3600)
    # Deliveries the budget put off to this window: due later than every poll of the backlog.
    waiting = seed(stack, emulator, clock, 3, status=Status.COMPLETED, due=now + 5)

    summary = local.run_poller()

    assert summary["redelivered"] == 3
    after = rows(stack)
    assert all(after[j]["status"] == "delivered" for j in waiting)
    # Each took 3 requests (the execution, its artifact list, a download); one poll fits in the rest.
    assert summary["claimed"] == 4 and summary["stopped"] == "budget"
    assert emulator.requests[GET] == 3 + 1
    assert [j for j in backlog if after[j]["status"] != "submitted"] == backlog[:1]


def test_one_list_request_answers_for_a_page_and_counts_as_one(stack, emulator, clock, budgeted):
    local = budgeted(REQUESTS_PER_MINUTE="30", POLLER_MAX_JOBS="8")
    seed(stack, emulator, clock, 16, due=int(clock()) - 60, plan=("running",))

    summary = local.run_poller()

    # Counted as 3 requests a job before the list answers (a GET and a delivery each), it would fit 10 jobs;
    # counted as what it was, one list per page, all 16 are looked at for 2 requests.
    assert summary["claimed"] == 16 and summary["requests"] == 2 and summary["stopped"] == "done"
    assert emulator.requests[LIST] == 2 and emulator.requests[GET] == 0
    assert {r["remote_status"] for r in jobs(stack)} == {"running"}


def test_a_request_held_back_ends_the_run_and_the_claimed_jobs_wait_on_their_rows(stack, emulator, clock, budgeted):
    local = budgeted(REQUESTS_PER_MINUTE="30", POLLER_MAX_JOBS="4", LIST_POLL_MIN_JOBS="0")
    backlog = seed(stack, emulator, clock, 12, due=int(clock()) - 3600)
    # Another function spent this minute already.
    other = RequestBudget(boto3.client("dynamodb"), stack.table, 30, window_seconds=60, clock=clock)
    assert other.take(30) is None

    summary = local.run_poller()

    assert summary["stopped"] == "refused" and summary["claimed"] == 4
    assert sum(n for k, n in emulator.requests.items() if k.startswith("GET /v1")) == 0
    after = rows(stack)
    window_end = (int(clock()) // 60 + 1) * 60
    for job_id in backlog[:4]:  # claimed, then put off to the next window with why: never left claimed
        assert window_end <= after[job_id]["next_poll_at"] < window_end + 30
        assert "budget" in after[job_id]["last_poll_error"]
    assert all(after[j]["next_poll_at"] < int(clock()) for j in backlog[4:])


def test_without_a_budget_a_run_takes_one_page_as_before(stack, emulator, clock, budgeted):
    local = budgeted(REQUESTS_PER_MINUTE="0", POLLER_MAX_JOBS="5", LIST_POLL_MIN_JOBS="0")
    backlog = seed(stack, emulator, clock, 12, due=int(clock()) - 3600)

    summary = local.run_poller()

    assert summary["claimed"] == 5 and summary["stopped"] == "one-page"
    after = rows(stack)
    assert [j for j in backlog if after[j]["status"] != "submitted"] == backlog[:5]


@pytest.mark.parametrize(("timeout", "pages", "stopped"), [(80, 2, "time"), (1000, 3, "interval")])
def test_no_page_starts_that_could_outlast_the_functions_time_or_the_minute(
    stack, emulator, clock, budgeted, timeout, pages, stopped
):
    budgeted(REQUESTS_PER_MINUTE="600", POLLER_MAX_JOBS="4", LIST_POLL_MIN_JOBS="0")
    seed(stack, emulator, clock, 40, due=int(clock()) - 3600)

    def time_left() -> float:  # every VLM Run request takes 5 s of the function's time
        return timeout - 5 * sum(n for k, n in emulator.requests.items() if k.startswith("GET /v1"))

    summary = wiring.sweeper().run(time_left=time_left)

    # The put-off work's page (none) takes no time; a page of 4 polls takes 20 s. The next page may take
    # up to twice the slowest: it starts only with 30 s (POLLER_MARGIN_SECONDS) to spare after it, and
    # only if it ends within the minute (the next scheduled run takes over).
    assert summary.pages == pages and summary.stopped == stopped
    assert summary.claimed == 4 * (pages - 1) == summary.polled


def test_due_pages_on_after_the_last_job_of_each_shard(stack, clock):
    store = JobStore(boto3.client("dynamodb"), stack.table, shards=3, clock=clock)
    now = int(clock())
    made = set()
    for i in range(17):  # many due at the same second: only the table's key tells them apart
        job = Job(
            job_id=f"{i * 7919:08x}{i:024x}",
            bucket="b",
            key=f"k{i}",
            status=Status.RECEIVED,
            created_at=now,
            updated_at=now,
        )
        assert store.create(job, due_at=now - (i % 2))
        made.add(job.job_id)

    seen: list[str] = []
    cursor: dict[str, Job] = {}
    while True:
        page = store.due(now, 4, after=cursor)
        cursor.update((store.shard(j.job_id), j) for j in page)
        assert [j.next_poll_at for j in page] == sorted(j.next_poll_at for j in page)
        seen += [j.job_id for j in page]
        if len(page) < 4:
            break

    assert sorted(seen) == sorted(made)  # each exactly once
    assert len(store.due(now, 100, since=now)) == 9  # a slice: the ones due at `now` only
