"""A load benchmark on the local stack: many files through the real handlers, numbers printed.

Measures what the design promises: one execution per file, the VLM Run requests each file costs,
how long the pipeline takes to settle, and that the poller's index read stays at zero once the
jobs are finished (its cost follows jobs in flight, not history).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from boto3.dynamodb.conditions import Key

from vlmwatch.adapters.jobstore import IN_FLIGHT_INDEX
from vlmwatch.core.lifecycle import SETTLED
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig
from vlmwatch_local.harness.clock import Clock


@dataclass
class BenchResult:
    files: int
    delivered: int
    executions: int
    seconds_to_settle: float
    files_per_second: float
    requests: dict[str, int]
    requests_per_file: float
    polls_per_file: float
    median_poll_count: float
    ingest_invocations: int
    poller_runs: int
    index_items_after: int
    ingest_files_per_second: float = 0.0
    delivery_files_per_second: float = 0.0
    seconds_to_drop: float = 0.0

    def report(self) -> str:
        lines = [
            f"files                       {self.files}",
            f"delivered                   {self.delivered}",
            f"executions started          {self.executions}",
            f"time to drop                {self.seconds_to_drop:.1f} s (the files put in the input bucket)",
            f"time to settle              {self.seconds_to_settle:.1f} s ({self.files_per_second:.1f} files/s)",
            f"drop + settle               {self.seconds_to_drop + self.seconds_to_settle:.1f} s",
            f"ingest                      {self.ingest_files_per_second:.1f} files/s (received -> submitted)",
            f"delivery                    {self.delivery_files_per_second:.1f} files/s (finished -> delivered)",
            f"VLM Run requests            {sum(self.requests.values())} ({self.requests_per_file:.2f} per file)",
            f"  by endpoint               {self.requests}",
            f"execution GETs per file     {self.polls_per_file:.2f} "
            f"(status polls, and re-fetches of executions too large to keep; median polls {self.median_poll_count:g})",
            f"ingest invocations          {self.ingest_invocations}",
            f"poller runs                 {self.poller_runs}",
            f"in-flight index items after {self.index_items_after}",
        ]
        return "\n".join(lines)


def run(
    files: int = 200,
    *,
    step_seconds: float = 0.5,
    timeout: float = 600,
    webhook: bool = False,
    duplicates: bool = False,
    moto: Literal["process", "thread", "in-process"] = "in-process",
    polling_mode: Literal["schedule", "stepfunctions"] = "schedule",
) -> BenchResult:
    """``files`` small files through the stack; ``duplicates``: every S3 event delivered twice (as
    EventBridge may). moto in-process by default (the emulator is served either way: real HTTP)."""
    env = {"POLL_BASE_SECONDS": "1", "POLL_CAP_SECONDS": "8"}
    clock = Clock()
    with LocalStack(
        emulator_config=EmulatorConfig(step_seconds=step_seconds),
        env=env,
        webhook=webhook,
        polling_mode=polling_mode,
        parameters={"AgentName": "doc-extractor:v1"},
        clock=clock,
        moto=moto,
        serve=True,
    ) as local:
        print(f"local stack up; dropping {files} files", flush=True)
        dropping = clock()
        for i in range(files):
            key = f"bench/{i:05d}.txt"
            version = local.drop(key, f"file {i}\n".encode() * 10, "text/plain")
            if duplicates:
                local.aws.send_raw(object_created(local.stack.input_bucket, key, version))
        started = clock()
        last = [0.0]

        def progress(_job: dict[str, Any]) -> None:
            # One line every 5 s at most: a long run is visibly alive, never a flood.
            now = clock()
            if now - last[0] >= 5:
                last[0] = now
                done = sum(j["status"] in SETTLED for j in local.aws.rows.values())
                print(f"  {now - started:5.0f} s  {done}/{files} delivered", flush=True)

        local.run_until_settled(expected=files, timeout=timeout, interval=0.2, on_change=progress)
        elapsed = clock() - started
        jobs = local.jobs()
        emulator = local.emulator
        assert emulator is not None
        requests = {k: v for k, v in emulator.requests.items() if k.startswith(("GET /v1", "POST /v1"))}
        table = boto3.resource("dynamodb").Table(local.stack.table)
        index_items = sum(
            table.query(
                IndexName=IN_FLIGHT_INDEX, KeyConditionExpression=Key("poll_shard").eq(f"s{s}"), Select="COUNT"
            )["Count"]
            for s in range(int(local.stack.environment().get("POLL_SHARDS", "1") or 1))
        )
        invocations: dict[str, int] = {}
        for inv in local.aws.invocations:
            invocations[inv.function] = invocations.get(inv.function, 0) + 1
        polls = [int(j.get("poll_count", 0)) for j in jobs]

        def rate(start: str, end: str) -> float:
            # Whole-second stamps on the rows: files over the span from the first start to the last end.
            starts = [float(j[start]) for j in jobs if j.get(start)]
            ends = [float(j[end]) for j in jobs if j.get(end)]
            span = max(ends, default=0) - min(starts, default=0)
            return len(ends) / max(span, 1.0)

        status_gets = requests.get("GET /v1/agent/executions/<exec_id>", 0)
        return BenchResult(
            files=files,
            delivered=sum(j["status"] == "delivered" for j in jobs),
            executions=len(emulator.executions),
            seconds_to_settle=elapsed,
            files_per_second=files / elapsed if elapsed else 0.0,
            requests=requests,
            requests_per_file=sum(requests.values()) / files,
            polls_per_file=status_gets / files,
            median_poll_count=statistics.median(polls) if polls else 0,
            ingest_invocations=invocations.get("ingest", 0),
            poller_runs=invocations.get("poller", 0),
            index_items_after=index_items,
            ingest_files_per_second=rate("created_at", "submitted_at"),
            delivery_files_per_second=rate("finished_at", "delivered_at"),
            seconds_to_drop=started - dropping,
        )


def object_created(bucket: str, key: str, version: str | None) -> dict[str, Any]:
    """The S3 "Object Created" event as EventBridge delivers it (for a second copy of an event)."""
    return {
        "version": "0",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "version-id": version}},
    }


def main(args: Any) -> int:
    result = run(
        args.files,
        step_seconds=args.step_seconds,
        webhook=args.webhook,
        duplicates=args.duplicates,
        moto=args.moto,
        timeout=args.timeout,
        polling_mode=args.polling_mode,
    )
    print(result.report())
    return 0 if result.delivered == result.files == result.executions else 1
