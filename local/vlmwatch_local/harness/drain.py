"""A big drop at a small plan's rate: does vlmwatch drain it at the rate the plan allows?

``python -m vlmwatch_local drain [--files 100] [--rpm 10] [--job-seconds 30]`` drops every file at once on
the local stack (in-process, virtual time: half an hour of VLM Run takes a minute or two of wall time)
with ``RequestsPerMinute=rpm``, against an emulator that *enforces* the same limit on every endpoint
(429 with ``Retry-After`` beyond it), and runs the event-source loops and the scheduled poller (once a
minute) until every document is written. It prints:

* requests per file by kind (starts, list polls, status GETs, artifact lists, artifact downloads, uploads)
  and the 429s VLM Run answered;
* the rate used against the rate allowed: API requests served per minute while work was waiting;
* time from the drop to the last document against the floor: the requests the files truly need (one
  start each, one artifact list and the downloads for each file with artifacts, one list poll) divided by
  the rate. The goal is a time within 1.2x of the floor.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass, field

from vlmwatch_local.harness.clock import Clock

# Emulator routes by the kind of request a file costs.
KINDS = {
    "POST /v1/agent/execute": "start",
    "GET /v1/agent/executions": "list poll",
    "GET /v1/agent/executions/<exec_id>": "status GET",
    "GET /v1/artifacts/list": "artifact list",
    "GET /v1/artifacts": "artifact download",
    "POST /v1/files": "upload",
    "POST /v1/files/presigned-url": "upload",
    "GET /v1/files/verify-upload/<file_id>": "upload",
}
START = 1_800_000_000  # on a minute boundary: the plan's windows and the budget's line up as in AWS


@dataclass
class DrainResult:
    files: int
    rpm: int
    delivered: int
    by_kind: Counter[str]
    rate_limited: int  # answered 429 by VLM Run (the plan's limit, or any other)
    settle_seconds: float  # drop -> last document
    needed: int  # requests the files truly need
    per_minute: list[int] = field(default_factory=list)  # API requests served, each minute of the drain
    failed_batches: int = 0  # stream batches parked in the failed-deliveries queue

    @property
    def floor_seconds(self) -> float:
        return self.needed / self.rpm * 60

    @property
    def ratio(self) -> float:
        return self.settle_seconds / self.floor_seconds if self.floor_seconds else math.inf

    @property
    def used_rate(self) -> float:
        """Requests served per minute over the full minutes of the drain (the last, partial one excluded)."""
        full = self.per_minute[:-1] or self.per_minute
        return sum(full) / len(full) if full else 0.0


def run(files: int = 100, rpm: int = 10, job_seconds: float = 30.0, max_minutes: int = 600) -> DrainResult:
    """Drop ``files`` at once and run until each has its document (or ``max_minutes`` of virtual time)."""
    from vlmwatch_local.cloud.stack import LocalStack
    from vlmwatch_local.emulator import EmulatorConfig

    clock = Clock(START)
    env = {
        "DEFAULT_AGENT_NAME": "doc-extractor:v1",
        "REQUESTS_PER_MINUTE": str(rpm),
        "POLLER_MAX_JOBS": str(files * 2),
        # One request at a time: in-process moto does not make concurrent conditional updates atomic.
        "POLLER_CONCURRENCY": "1",
    }
    # Three status steps: each execution is done job_seconds after it started. VLM Run's limit is the plan's.
    steps = EmulatorConfig(
        step_seconds=job_seconds / 3, status_sequence=["enqueued", "running", "running"], requests_per_minute=rpm
    )
    local = LocalStack(
        emulator_config=steps, env=env, moto="in-process", clock=clock, fetch=lambda url: (b"drain", "text/plain")
    )
    with local:
        stack, aws, emulator = local.stack, local.aws, local.emulator
        assert emulator is not None
        for i in range(files):
            local.drop(f"drain/{i:04d}.txt", f"document {i}".encode())
        aws.pump_ingest()
        aws.pump_stream()
        for second in range(1, max_minutes * 60 + 1):
            clock.advance(1)
            emulator.tick()
            aws.pump_stream()
            if int(clock()) % 60 == 0:  # the scheduled poller: once a minute
                aws.run_poller()
                aws.pump_stream()
            if second % 30 == 0:
                rows = stack.jobs()
                if len(rows) == files and all(r["status"] == "delivered" for r in rows):
                    break
        rows = stack.jobs()
        delivered = [float(r["delivered_at"]) for r in rows if r.get("delivered_at")]
        settle = (max(delivered) if delivered else clock()) - START
        by_kind: Counter[str] = Counter()
        for route, count in emulator.requests.items():
            if route in KINDS:
                by_kind[KINDS[route]] += count
        # Every request that reached a route was served; the refused ones never did.
        rate_limited = emulator.requests["rate_limited"] + emulator.requests["429"]
        with_artifacts = {eid for eid, _ in emulator.artifacts}
        needed = files + len(with_artifacts) + len(emulator.artifacts) + 1
        last_minute = int((START + settle) // 60)
        per_minute = [emulator.faults.served_by_minute[m] for m in range(START // 60, last_minute + 1)]
    return DrainResult(
        files=files,
        rpm=rpm,
        delivered=len(delivered),
        by_kind=by_kind,
        rate_limited=rate_limited,
        settle_seconds=settle,
        needed=needed,
        per_minute=per_minute,
        failed_batches=len(aws.parked),
    )


def report(result: DrainResult) -> str:
    order = ["start", "list poll", "status GET", "artifact list", "artifact download", "upload"]
    total = sum(result.by_kind.values())
    lines = [
        f"drain: {result.files} files dropped at once, RequestsPerMinute={result.rpm} "
        f"(VLM Run enforcing {result.rpm}/min on every endpoint)",
        f"delivered {result.delivered}/{result.files}; failed stream batches: {result.failed_batches}; "
        f"answered 429: {result.rate_limited}",
        "requests per file by kind: "
        + ", ".join(f"{k} {result.by_kind[k] / result.files:.2f}" for k in order if result.by_kind[k])
        + f"; all {total / result.files:.2f} ({total} requests)",
        f"rate used: {result.used_rate:.2f}/min of {result.rpm} allowed "
        f"({100 * result.used_rate / result.rpm:.0f} %; per minute: {' '.join(map(str, result.per_minute))})",
        f"time to last document: {result.settle_seconds:.0f} s; floor {result.floor_seconds:.0f} s "
        f"({result.needed} requests needed / {result.rpm} per minute): {result.ratio:.2f}x the floor (goal <= 1.2x)",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    result = run(files=args.files, rpm=args.rpm, job_seconds=args.job_seconds)
    print(report(result))
    return 0 if result.delivered == result.files else 1


if __name__ == "__main__":  # pragma: no cover - `python -m vlmwatch_local drain` is the way in
    parser = argparse.ArgumentParser(prog="python -m vlmwatch_local.harness.drain")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rpm", type=int, default=10)
    parser.add_argument("--job-seconds", type=float, default=30.0)
    raise SystemExit(main(parser.parse_args()))
