"""Requests, latency and AWS cost per mode, side by side, in virtual time.

``python -m vlmwatch_local perf [--jobs 100] [--job-seconds 120]`` runs the real handlers against moto
and the VLM Run emulator (the local stack, in-process), on the harnesses' clock, virtual here: 100 jobs
that each take 120 s at VLM Run cost seconds of wall time, not minutes. For each mode it counts what
matters for a bill and a rate limit:

* ``schedule``: the scheduled poller (every 60 s) polls jobs when due (age-shaped backoff), one list
  request for many;
* ``stepfunctions``: one state machine per job (Wait -> PollOnce -> Choice), the template's definition
  run by the local Step Functions with the real PollOnce handler; the scheduled sweeper runs beside it;
* ``webhook``: VLM Run calls back at completion; polling is the slow safety net;
* ``stepfunctions+webhook``: each job's state machine waits on a task token (AwaitCallback) that the
  job's leaving flight releases; a callback that never comes costs a poll at the token's timeout;
* ``sdk-wait``: a baseline that polls every job every 5 s, as the official SDK's ``executions.wait`` does.

Measured per mode: VLM Run status requests per job and all requests; completion → result document latency
(p50/p95, virtual seconds: how long a document waits for vlmwatch to notice, not processing time); AWS API
calls by service and operation (every client the handlers build, plus the event-source loops' SQS calls);
Lambda invocations and their measured CPU time. A cost model turns the counts into dollars per 1,000
documents at the list prices in ``PRICES`` (us-east-1, stated in the report). Writes
``docs/PERFORMANCE.md`` and ``docs/performance.png`` with ``--write``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmwatch.core.lifecycle import REMOTE_ENDED
from vlmwatch_local import ROOT
from vlmwatch_local.harness.clock import Clock

MEMORY_GB = 0.5  # every function's MemorySize (512 MB)

# Public list prices, us-east-1, as used here (check the pricing pages before relying on them).
PRICES = {
    "lambda_request": 0.20 / 1e6,  # per invocation
    "lambda_gb_second_arm": 0.0000133334,  # per GB-second, arm64
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand write request unit
    "dynamodb_read_unit": 0.125 / 1e6,  # on-demand read request unit
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST per request
    "s3_get": 0.0004 / 1000,  # GET, HEAD per request
    "sqs_request": 0.40 / 1e6,  # standard queue, per request (64 KB chunk)
    "eventbridge_event": 1.00 / 1e6,  # custom events put
    "sfn_state_transition": 0.025 / 1000,  # Step Functions standard workflow, per state transition
    "secrets_api_call": 0.05 / 10000,  # per 10,000 API calls
    "cloudwatch_metric_ingest": 0.0,  # EMF metrics ride on log ingestion, counted below
    "logs_ingest_gb": 0.50,  # per GB ingested
}
# Writes to the job table also write the indexes whose keys change: counted as 2 units per write
# (table + the sparse index most transitions touch). Reads are strongly consistent: 1 unit each.
WRITE_UNITS_PER_WRITE = 2
LOG_BYTES_PER_INVOCATION = 1500  # START/END/REPORT + a JSON line or two + one EMF blob, measured locally
TUNABLE = ("POLL_BASE_SECONDS", "POLL_CAP_SECONDS", "POLL_AGE_FACTOR", "LIST_POLL_MIN_JOBS")


@dataclass
class ModeResult:
    mode: str
    jobs: int
    status_requests: int
    all_requests: int
    latencies: list[float]
    aws_calls: Counter[str]
    durations: dict[str, list[float]]  # CPU seconds of each Lambda invocation, by function
    delivered: int
    failed: int
    cost: dict[str, float] = field(default_factory=dict)
    settled_seconds: float = 0.0  # virtual seconds from the first file to the last document
    budgeted_requests: int = 0  # starts, status GETs and lists: what the shared budget counts
    transitions: int = 0  # Step Functions state transitions: every state entered, retries included

    @property
    def invocations(self) -> int:
        return sum(len(values) for values in self.durations.values())

    @property
    def lambda_seconds(self) -> float:
        return sum(sum(values) for values in self.durations.values())

    def median_ms(self, function: str) -> float:
        values = sorted(self.durations.get(function, []))
        return 1000 * values[len(values) // 2] if values else 0.0

    @property
    def status_per_job(self) -> float:
        return self.status_requests / self.jobs

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        values = sorted(self.latencies)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _count_calls(session: Any, counter: Counter[str]) -> None:
    """Count every API call of the clients this botocore session builds from now on."""

    def before(model: Any, **_: Any) -> None:
        counter[f"{model.service_model.endpoint_prefix}:{model.name}"] += 1

    session.register("before-call", before)


def run_mode(mode: str, jobs: int, job_seconds: int) -> ModeResult:
    """One mode, from an empty stack to every job delivered, in virtual time (the local stack in-process)."""

    from vlmwatch.runtime import wiring
    from vlmwatch_local.cloud.stack import LocalStack
    from vlmwatch_local.emulator import EmulatorConfig

    clock = Clock(1_800_000_000)
    calls: Counter[str] = Counter()
    env = {"DEFAULT_AGENT_NAME": "doc-extractor:v1", "POLLER_MAX_JOBS": str(jobs * 2)}
    # Polling knobs from the caller's environment, to measure a tuning before deploying it.
    env.update({k: v for k, v in os.environ.items() if k in TUNABLE})
    if mode.startswith("budget"):
        # The shared request budget at a small plan's 10 a minute. One poll at a time: in-process moto
        # does not make concurrent conditional updates atomic (DynamoDB does).
        env.update({"REQUESTS_PER_MINUTE": "10", "POLLER_CONCURRENCY": "1"})
    # Three status steps of job_seconds / 3: the execution is done job_seconds after it started.
    steps = EmulatorConfig(step_seconds=job_seconds / 3, status_sequence=["enqueued", "running", "running"])
    local = LocalStack(
        emulator_config=steps,
        env=env,
        webhook=mode in ("webhook", "stepfunctions+webhook"),
        polling_mode="stepfunctions" if mode.startswith("stepfunctions") else "schedule",
        moto="in-process",
        clock=clock,
        fetch=lambda url: (b"perf document", "text/plain"),
    )
    with local:
        stack, aws, emulator = local.stack, local.aws, local.emulator
        assert emulator is not None
        machines = local.machines  # stepfunctions modes: the template's state machine, run locally
        _count_calls(wiring._session(), calls)
        # The event-source loops' SQS calls are what Lambda's SQS poller would make (and bill).
        aws.sqs.meta.events.register("before-call", lambda model, **_: calls.update([f"sqs:{model.name}"]))
        first_file = clock()
        # Files arrive over a minute, so completions fall anywhere between two poller runs, as they would.
        # The baseline polls each job from its start, so its files all arrive at once.
        for i in range(jobs):
            local.drop(f"perf/{i:04d}.txt", f"document {i}".encode())
            if mode != "sdk-wait":
                aws.pump_ingest()
                clock.advance(60 / jobs)
        aws.pump_ingest()
        completed_at: dict[str, float] = {}
        if mode == "sdk-wait":
            status = _sdk_wait(emulator, clock)
        else:
            status = 0
            # One-second steps: the emulator finishes (and calls back) on the second an execution ends.
            for second in range(4 * 3600):
                clock.advance(1)
                emulator.tick()
                if machines is not None:
                    machines.run_due()
                aws.pump_stream()
                if int(clock()) % 60 == 0:  # the scheduled poller: once a minute
                    aws.run_poller()
                    aws.pump_stream()
                if second % 30 == 0:
                    rows = stack.jobs()
                    # ...and every state machine ended: the transitions it still makes are part of the bill.
                    everything = len(rows) == jobs and all(r["status"] == "delivered" for r in rows)
                    if everything and (machines is None or not machines.running):
                        break
            for execution in emulator.executions.values():
                # When VLM Run finished it (three steps of job_seconds / 3), in whole seconds like delivered_at.
                completed_at[execution.id] = int(execution.created_at + job_seconds)
            # Status requests: GETs by id and list requests (one list answers for many jobs).
            status = (
                emulator.requests["GET /v1/agent/executions/<exec_id>"] + emulator.requests["GET /v1/agent/executions"]
            )
        rows = stack.jobs()
        settled = max((float(r["delivered_at"]) for r in rows if r.get("delivered_at")), default=clock()) - first_file
        latencies = [
            float(r["delivered_at"]) - completed_at[r["execution_id"]]
            for r in rows
            if r.get("delivered_at") and r.get("execution_id") in completed_at
        ]
        requests = sum(v for k, v in emulator.requests.items() if k.startswith(("GET /v1", "POST /v1")))
        budgeted = sum(v for k, v in emulator.requests.items() if k.startswith(("GET /v1/agent", "POST /v1/agent")))
        durations: dict[str, list[float]] = {}
        for inv in aws.invocations:
            # CPU time, not wall time: everything runs in this thread here (VLM Run through WSGI), and a
            # shared machine's load must not change the bill.
            durations.setdefault(inv.function, []).append(inv.cpu_seconds)
    return ModeResult(
        mode=mode,
        jobs=jobs,
        status_requests=status,
        all_requests=requests,
        latencies=latencies,
        aws_calls=calls,
        durations=durations,
        delivered=sum(r["status"] == "delivered" for r in rows),
        failed=sum(r.get("outcome") in ("failed", "timed_out") for r in rows),
        settled_seconds=settled,
        budgeted_requests=budgeted,
        transitions=machines.transitions if machines is not None else 0,
    )


def _sdk_wait(emulator: Any, clock: Clock) -> int:
    """The baseline: submitted through vlmwatch, then each execution polled every 5 s until it ends."""
    import httpx

    gets = 0
    pending = set(emulator.executions)
    client = httpx.Client(transport=httpx.WSGITransport(app=emulator.app))
    headers = {"Authorization": f"Bearer {emulator.config.api_key}"}
    while pending:
        clock.advance(5)
        emulator.tick()
        for execution_id in sorted(pending):
            gets += 1
            status = client.get(f"http://emulator/v1/agent/executions/{execution_id}", headers=headers).json()["status"]
            if status in REMOTE_ENDED:
                pending.discard(execution_id)
    return gets


def cost_per_1000(result: ModeResult) -> dict[str, float]:
    """Dollars per 1,000 documents, by service, from the measured counts."""
    scale = 1000 / result.jobs
    calls = result.aws_calls
    ddb_writes = sum(
        v
        for k, v in calls.items()
        if k.startswith("dynamodb:") and k.split(":")[1] in ("PutItem", "UpdateItem", "DeleteItem")
    )
    ddb_reads = sum(
        v for k, v in calls.items() if k.startswith("dynamodb:") and k.split(":")[1] in ("GetItem", "Query", "Scan")
    )
    s3_put = sum(
        v
        for k, v in calls.items()
        if k.startswith("s3:")
        and k.split(":")[1]
        in (
            "PutObject",
            "CopyObject",
            "DeleteObject",
            "ListObjectsV2",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
        )
    )
    s3_get = sum(v for k, v in calls.items() if k.startswith("s3:") and k.split(":")[1] in ("GetObject", "HeadObject"))
    sqs = sum(v for k, v in calls.items() if k.startswith("sqs:"))
    events = sum(v for k, v in calls.items() if k == "events:PutEvents")
    secrets = sum(v for k, v in calls.items() if k.startswith("secretsmanager:"))
    invocations = result.invocations
    cost = {
        "Lambda requests": invocations * PRICES["lambda_request"],
        "Lambda GB-s": result.lambda_seconds * MEMORY_GB * PRICES["lambda_gb_second_arm"],
        "DynamoDB": ddb_writes * WRITE_UNITS_PER_WRITE * PRICES["dynamodb_write_unit"]
        + ddb_reads * PRICES["dynamodb_read_unit"],
        "S3": s3_put * PRICES["s3_put"] + s3_get * PRICES["s3_get"],
        # + one SendMessage per object by EventBridge, which these counts do not see.
        "SQS": (sqs + result.jobs) * PRICES["sqs_request"],
        "EventBridge": events * PRICES["eventbridge_event"],
        "Step Functions": result.transitions * PRICES["sfn_state_transition"],
        "Secrets Manager": secrets * PRICES["secrets_api_call"],
        "CloudWatch Logs": invocations * LOG_BYTES_PER_INVOCATION / 1e9 * PRICES["logs_ingest_gb"],
    }
    return {k: v * scale for k, v in cost.items()}


def report(results: list[ModeResult], job_seconds: int) -> str:
    lines = [
        f"| mode | status requests / job | all VLM Run requests / job | all requests, {results[0].jobs} jobs | "
        "completion -> document p50 / p95 (s) | delivered / failed | AWS $ / 1,000 docs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        total = sum(r.cost.values()) if r.cost else 0.0
        lines.append(
            f"| {r.mode} | {r.status_per_job:.1f} | {r.all_requests / r.jobs:.1f} | {r.all_requests} | "
            + (f"{r.pct(0.5):.0f} / {r.pct(0.95):.0f} | {r.delivered} / {r.failed} | " if r.cost else "- | - | ")
            + (f"{total:.4f}" if r.cost else "-")
            + " |"
        )
    lines.append("")
    lines.append(
        f"{results[0].jobs} jobs of {job_seconds} s each at VLM Run, virtual time: a latency is how long a finished"
        " execution waits for vlmwatch to notice it (poll schedule, backoff, callback), to the second. The work"
        " itself adds the handlers' own time, measured in-process against moto (median CPU time per invocation): "
        + "; ".join(
            f"{r.mode}: "
            + ", ".join(
                f"{fn} {r.median_ms(fn):.0f} ms"
                for fn in ("webhook", "pollonce", "poller", "complete")
                if r.durations.get(fn)
            )
            for r in results
            if r.durations and r.mode != "sdk-wait"
        )
        + "."
    )
    lines.append("")
    lines.append("| cost per 1,000 documents | " + " | ".join(r.mode for r in results if r.cost) + " |")
    lines.append("| --- |" + " ---: |" * sum(1 for r in results if r.cost))
    services = list(next(r.cost for r in results if r.cost))
    for service in services:
        lines.append(f"| {service} | " + " | ".join(f"{r.cost[service]:.5f}" for r in results if r.cost) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(r.cost.values()):.4f}**" for r in results if r.cost) + " |")
    return "\n".join(lines)


def coldstart_table(runs: int) -> str:
    """Median import (and import + first use) of each handler beside the baseline; the layer's size."""
    from vlmwatch_local.harness import coldstart

    medians = coldstart.measure(runs)
    base = medians["baseline"]
    lines = [
        f"Cold start: median of {runs} fresh interpreters each, the layer's requirements + boto3 (as on Lambda),"
        " interleaved with the baseline (boto3 + S3/DynamoDB clients + httpx + pydantic + powertools"
        f" Logger/Metrics) = {base:.0f} ms.",
        "",
        "| handler | import (ms) | x baseline | import + first use (ms) | x baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for handler in coldstart.HANDLERS:
        ready = medians[f"{handler}+ready"]
        lines.append(
            f"| {handler} | {medians[handler]:.0f} | {medians[handler] / base:.2f} | {ready:.0f} | {ready / base:.2f} |"
        )
    size = coldstart.layer_size()
    if size:
        lines += ["", f"Built layer (`make build`): {size[0] / 1e6:.1f} MB unpacked, {size[1]} files."]
    return "\n".join(lines)


def chart(results: list[ModeResult], path: Path) -> None:
    """Status requests per job and completion -> document latency, per mode (the budget run is in the text:
    its latency is the budget's doing and would flatten every other bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if not r.mode.startswith("budget")]
    colors = {
        "schedule": "#4C72B0",
        "stepfunctions": "#DD8452",
        "webhook": "#55A868",
        "stepfunctions+webhook": "#937860",
        "sdk-wait": "#C44E52",
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    modes = [r.mode for r in shown]
    bars = left.bar(modes, [r.status_per_job for r in shown], color=[colors.get(m, "#8172B2") for m in modes])
    left.bar_label(bars, fmt="%.1f")
    left.set_title("VLM Run status requests per job")
    left.set_ylabel("requests per job")
    timed = [r for r in shown if r.latencies]
    x = range(len(timed))
    p50 = right.bar([i - 0.2 for i in x], [r.pct(0.5) for r in timed], width=0.4, color="#CCB974")
    p95 = right.bar([i + 0.2 for i in x], [r.pct(0.95) for r in timed], width=0.4, color="#8172B2")
    right.bar_label(p50, fmt="%.0f")
    right.bar_label(p95, fmt="%.0f")
    right.set_xticks(list(x), [r.mode for r in timed])
    right.legend([p50, p95], ["p50", "p95"])
    right.set_title("completion -> result document (virtual s)")
    right.set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: Any) -> int:
    """The whole report; the process's environment is as it was afterwards (tests call this too)."""
    saved = dict(os.environ)
    try:
        return _main(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _main(args: Any) -> int:
    import logging

    # Everything runs in-process against moto: no real credentials or endpoints, and moto does not route
    # botocore's account-id endpoints for DynamoDB Streams (see PITFALLS).
    os.environ.update(
        {
            "POWERTOOLS_METRICS_DISABLED": "1",  # the handlers' EMF lines are not the report
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        }
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)

    package = logging.getLogger("vlmwatch")
    level = package.level
    package.setLevel(logging.ERROR)  # thousands of jobs' info lines are not the report
    # First, on an idle machine: fresh interpreters are timed, and the throughput run's moto server and
    # emulator take a while to wind down.
    cold = ""
    if getattr(args, "coldstart_runs", 0):
        print(f"cold start: {args.coldstart_runs} fresh interpreters per handler and baseline...", flush=True)
        cold = coldstart_table(args.coldstart_runs)
    results = []
    try:
        for mode in MODES:
            started = time.monotonic()
            result = run_mode(mode, args.jobs, args.job_seconds)
            if mode != "sdk-wait":
                result.cost = cost_per_1000(result)
            results.append(result)
            print(f"{mode}: done in {time.monotonic() - started:.0f} s of wall time", flush=True)
    finally:
        package.setLevel(level)
    text = report(results, args.job_seconds)
    if getattr(args, "budget", True):
        budget = run_mode("budget-10/min", args.jobs, args.job_seconds)
        minutes = budget.settled_seconds / 60
        text += (
            f"\n\nA {budget.jobs}-file drop with `RequestsPerMinute=10`: {budget.delivered} delivered, {budget.failed}"
            f" failed, last document {minutes:.0f} minutes after the first file. VLM Run requests, every one"
            f" counted against the budget: {budget.all_requests} ({budget.budgeted_requests} starts and polls,"
            f" {budget.all_requests - budget.budgeted_requests} artifact lists and downloads),"
            f" {budget.all_requests / max(minutes, 1):.1f} a minute on average (`make drain` measures the same"
            " drop against an emulator that enforces the limit)."
        )
        results.append(budget)
    if getattr(args, "throughput_files", 0):
        from vlmwatch_local.harness import bench

        print(f"throughput: {args.throughput_files} files through the local stack (real time)...", flush=True)
        through = bench.run(args.throughput_files, step_seconds=0.2, timeout=1800)
        text += (
            f"\n\nThroughput on the local stack (moto in-process with its hot spots fixed, emulator served over HTTP,"
            f" 2 shared cores, real time): {through.files} files dropped in {through.seconds_to_drop:.0f} s,"
            f" {through.delivered} delivered {through.seconds_to_settle:.0f} s later;"
            f" ingest {through.ingest_files_per_second:.1f} files/s (received -> submitted),"
            f" delivery {through.delivery_files_per_second:.1f} files/s (finished -> delivered)."
        )
    if cold:
        text += "\n\n" + cold
    print()
    print(text)
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        chart(results, ROOT / "docs" / "performance.png")
        prices = "\n".join(f"- `{k}`: {v:.10g} USD" for k, v in PRICES.items())
        document = ROOT / "docs" / "PERFORMANCE.md"
        # Sections other commands measure (drain, scale, the local stack's profile) follow a marker and are kept.
        previous = document.read_text() if document.exists() else ""
        kept = previous[previous.index(KEPT_MARKER) :] if KEPT_MARKER in previous else ""
        document.write_text(
            "# Performance\n\nRegenerate with `make perf` (`python -m vlmwatch_local perf --write`).\n\n"
            + text
            + "\n\n![requests and latency per mode](performance.png)\n\n## Prices used (us-east-1 list prices)\n\n"
            + prices
            + f"\n\nDynamoDB writes are counted as {WRITE_UNITS_PER_WRITE} write units (table + index); reads as"
            " 1 strongly consistent unit. Lambda GB-s use the measured in-process handler CPU time at"
            f" {MEMORY_GB * 1024:.0f} MB (moto is slower than AWS: an upper bound). CloudWatch Logs at"
            f" {LOG_BYTES_PER_INVOCATION} bytes per invocation.\n" + (f"\n{kept}" if kept else "")
        )
    return 0 if all(r.failed == 0 and r.delivered == r.jobs for r in results if r.mode != "sdk-wait") else 1


MODES = ("schedule", "stepfunctions", "webhook", "stepfunctions+webhook", "sdk-wait")
KEPT_MARKER = "<!-- measured by other commands (make drain, make scale, make bench): kept by make perf -->"


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--job-seconds", type=int, default=120)
    parser.add_argument("--write", action="store_true")
    raise SystemExit(main(parser.parse_args()))
