"""The fault harness: many files through the local stack while everything that can go wrong does, then
the invariants that must hold anyway.

Faults (rates per request / per event / per step, from a seeded RNG):

* VLM Run: 429 with ``Retry-After`` (30 %), 5xx (10 %), a POST that creates the execution and then
  hangs past the client's timeout (5 %: the real ambiguous case), executions that fail (10 %) or never
  finish (5 %), callbacks dropped (webhook mode) or delayed;
* S3 → SQS: every event delivered twice, the copy late; some keys get a second version mid-run;
* the handlers: killed (a ``BaseException`` no handler can catch, as a timeout or out-of-memory kill
  would be) at each step of submit and delivery;
* the output bucket: every write denied for a while (the library's own S3 client refuses ``PutObject``
  to it: a botocore event handler, no library code replaced).

Time is compressed (a 1 s client timeout, deadlines of a minute, leases of seconds) so a 1,000-file run
fits in about 20 minutes on 2 cores. The invariants checked at the end are in :func:`check`.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from vlmwatch.adapters.claims import SubmitClaims
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.layout import OutputLayout
from vlmwatch.runtime import wiring
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig
from vlmwatch_local.harness.clock import Clock


class SimulatedCrash(BaseException):
    """The process is killed here: no ``except Exception`` sees it, nothing after it runs."""

    simulated = True


@dataclass
class ChaosConfig:
    files: int = 1000
    webhook: bool = False
    seed: int = 7
    rate_429: float = 0.30
    rate_5xx: float = 0.10
    hang_rate: float = 0.05
    failure_rate: float = 0.10
    stuck_rate: float = 0.05
    callback_drop_rate: float = 0.2
    crash_rate: float = 0.02  # per crash point passed
    second_versions: float = 0.05  # share of keys uploaded again mid-run
    output_outage_seconds: float = 20.0
    job_deadline_seconds: int = 45  # how long a stuck execution holds its file (compressed time)
    late_seconds: float = 60.0  # how late a duplicate event or a second version may come
    timeout: float = 1800.0


@dataclass
class ChaosReport:
    files: int = 0
    versions: int = 0
    executions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    wrong: int = 0
    stale: int = 0
    duplicates_explained: int = 0
    duplicates_unexplained: int = 0
    left_in_flight: int = 0
    unexplained_failures: int = 0
    dlq_entries: int = 0
    dlq_unaccounted: int = 0
    parked_deliveries: int = 0
    crashes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.wrong
            or self.stale
            or self.duplicates_unexplained
            or self.left_in_flight
            or self.unexplained_failures
            or self.dlq_unaccounted
        )

    def table(self) -> str:
        rows = [
            ("files (object versions)", f"{self.files} keys, {self.versions} versions"),
            ("executions started", self.executions),
            ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))),
            ("why not completed", ", ".join(f"{k} {v}" for k, v in sorted(self.failure_reasons.items())) or "-"),
            ("lost", self.lost),
            ("wrong document", self.wrong),
            ("stale document at the key", self.stale),
            ("extra executions, on record as orphans", self.duplicates_explained),
            ("extra executions, unexplained", self.duplicates_unexplained),
            ("rows left in flight", self.left_in_flight),
            ("failures without a reason", self.unexplained_failures),
            ("ingest DLQ entries (unaccounted)", f"{self.dlq_entries} ({self.dlq_unaccounted})"),
            ("stream records given up (swept)", self.parked_deliveries),
            ("handler kills", ", ".join(f"{k} {v}" for k, v in sorted(self.crashes.items())) or "0"),
            ("VLM Run faults", ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))),
            ("VLM Run requests", f"{self.requests} ({self.requests / max(self.versions, 1):.1f} per version)"),
            ("wall time", f"{self.wall_seconds:.0f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)


# -- fault injection --------------------------------------------------------------------------------


class Faults:
    """Kills handlers at named points (around public library methods), and takes the output bucket away for
    a while: the process's S3 client (``wiring.s3()``, the one the library writes with) refuses every
    ``PutObject`` to it with ``AccessDenied``, from a botocore event handler."""

    def __init__(self, rng: random.Random, crash_rate: float, clock: Clock) -> None:
        self._rng = rng
        self._rate = crash_rate
        self._clock = clock
        self._lock = threading.Lock()
        self.crashes: Counter[str] = Counter()
        self.outage_until = 0.0
        self._output_bucket = ""
        self._undo: list[Callable[[], None]] = []

    def maybe_crash(self, point: str) -> None:
        with self._lock:
            hit = self._rng.random() < self._rate
            if hit:
                self.crashes[point] += 1
        if hit:
            raise SimulatedCrash(point)

    def _wrap(self, owner: Any, name: str, *, before: str | None = None, after: str | None = None) -> None:
        original = getattr(owner, name)
        faults = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                faults.maybe_crash(before)
            result = original(*args, **kwargs)
            if after and (result is not False and result is not None):
                faults.maybe_crash(after)
            return result

        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, original))

    def install(self, output_bucket: str) -> None:
        # Submit: after the row is written, after the claim, after VLM Run created the execution.
        self._wrap(JobStore, "create", after="ingest: row written, not claimed")
        self._wrap(SubmitClaims, "claim", after="submit: claimed, not sent")
        self._wrap(VlmRunClient, "execute", after="submit: sent, not recorded")
        # Delivery: after an artifact, after the version document, before the row says delivered.
        self._wrap(OutputWriter, "put_artifact_stream", after="deliver: artifact written")
        self._wrap(OutputWriter, "put_result", after="deliver: document written, not published")
        self._wrap(OutputWriter, "publish_latest", after="deliver: published, not marked delivered")
        self._output_bucket = output_bucket
        events = wiring.s3().meta.events
        event = "before-parameter-build.s3.PutObject"
        events.register(event, self._deny_output_write, unique_id="chaos-output-outage")
        self._undo.append(lambda: events.unregister(event, unique_id="chaos-output-outage"))

    def _deny_output_write(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == self._output_bucket and self._clock() < self.outage_until:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied (emulated)"}}, "PutObject")

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


# -- the run ----------------------------------------------------------------------------------------


def _content(i: int, version: int) -> bytes:
    return f"chaos file {i} version {version}\n".encode() * (1 + i % 3)


def run(config: ChaosConfig, *, log: Callable[[str], None] = print) -> ChaosReport:
    rng = random.Random(config.seed)
    emulator = EmulatorConfig(
        step_seconds=0.5,
        rate_429=config.rate_429,
        retry_after=0.05,
        rate_5xx=config.rate_5xx,
        hang_rate=config.hang_rate,
        hang_seconds=1.6,
        failure_rate=config.failure_rate,
        stuck_rate=config.stuck_rate,
        callback_drop_rate=config.callback_drop_rate if config.webhook else 0.0,
        callback_delay_seconds=3.0 if config.webhook else 0.0,
        seed=config.seed,
    )
    env = {
        "POLL_BASE_SECONDS": "1",
        "POLL_CAP_SECONDS": "4",
        "JOB_DEADLINE_SECONDS": str(config.job_deadline_seconds),
        "SUBMIT_LEASE_SECONDS": "5",
        "SUBMIT_DEADLINE_SECONDS": "900",
        "EVIDENCE_WINDOW_SECONDS": "8",
        "DELIVERY_GRACE_SECONDS": "8",
        "POLL_CLAIM_SECONDS": "8",
        "VLMRUN_TIMEOUT_SECONDS": "1",
        "POLLER_MAX_JOBS": "300",
        "POLLER_CONCURRENCY": "8",
    }
    if config.webhook:
        env["POLL_CAP_SECONDS"] = "6"  # the safety net; callbacks do the work
    clock = Clock()
    faults = Faults(rng, config.crash_rate, clock)
    report = ChaosReport(files=config.files)
    started = clock()
    local = LocalStack(
        emulator_config=emulator, env=env, webhook=config.webhook, parameters={"AgentName": "chaos:v1"}, clock=clock
    )
    with local:
        faults.install(local.stack.output_bucket)
        try:
            _drive(local, config, rng, faults, report, log, clock)
        finally:
            faults.uninstall()
        report.wall_seconds = clock() - started
        check(local, report)
    report.crashes = dict(faults.crashes)
    return report


def _drive(
    local: LocalStack,
    config: ChaosConfig,
    rng: random.Random,
    faults: Faults,
    report: ChaosReport,
    log: Any,
    clock: Clock,
) -> None:
    sqs = boto3.client("sqs")
    queue = local.stack.ingest_queue_url
    # Files arrive over a while (5 a second), as uploads do; every event comes twice, the copy up to a
    # minute late (``late_seconds``); some keys get a second version mid-run.
    window = config.files / 5
    drops = sorted((rng.uniform(0, window), i) for i in range(config.files))
    copies: list[tuple[float, str]] = []
    second = rng.sample(range(config.files), int(config.files * config.second_versions))
    renewals = sorted((rng.uniform(1, window + config.late_seconds / 2), i) for i in second)
    outage_at = rng.uniform(1, window + config.late_seconds / 3)
    aws = local.aws
    t0 = clock()
    deadline = t0 + config.timeout
    last_log = last_check = 0.0
    while clock() < deadline:
        now = clock() - t0
        while drops and drops[0][0] <= now:
            _, i = drops.pop(0)
            key = f"chaos/{i:05d}.txt"
            version = local.drop(key, _content(i, 1), "text/plain")
            late = now + rng.uniform(0, config.late_seconds)
            copies.append((late, json.dumps(_event(local.stack.input_bucket, key, version))))
            copies.sort()
        while copies and copies[0][0] <= now:
            aws.send_raw(copies.pop(0)[1])
        while renewals and renewals[0][0] <= now:
            _, i = renewals.pop(0)
            local.drop(f"chaos/{i:05d}.txt", _content(i, 2), "text/plain")
        if outage_at and now >= outage_at:
            faults.outage_until = clock() + config.output_outage_seconds
            outage_at = 0.0
        aws.step(ingest_batches=3)  # interleave: AWS runs ingest, poller and delivery side by side
        if now - last_check < 2:
            continue  # a full table scan is the slowest thing here: look every few seconds
        last_check = now
        jobs = local.jobs()
        settled = sum(j["status"] in ("delivered", "skipped") for j in jobs)
        if now - last_log >= 15:
            last_log = now
            statuses = Counter(j["status"] for j in jobs)
            log(f"  {now:6.0f}s  rows {len(jobs)}  settled {settled}  {dict(statuses)}")
        expected = config.files + len(second)
        if (
            not drops
            and not copies
            and not renewals
            and len(jobs) >= expected
            and settled == len(jobs)
            and _queue_empty(sqs, queue)
        ):
            return
        clock.sleep(0.05)
    report.problems.append("did not settle before the timeout")


def _event(bucket: str, key: str, version: str | None) -> dict[str, Any]:
    """The S3 "Object Created" event as EventBridge delivers it (the copy of an event already sent)."""
    return {
        "version": "0",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "version-id": version}},
    }


def _queue_empty(sqs: Any, queue: str) -> bool:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


# -- the invariants -----------------------------------------------------------------------------------


def check(local: LocalStack, report: ChaosReport) -> None:
    """Every object version has exactly one outcome; no document holds another file's response; the newest
    version's document is at the key; one execution per version unless an ambiguous submit is on record;
    nothing left in flight; every DLQ entry accounted for; every failure says why."""
    s3 = boto3.client("s3")
    stack = local.stack
    writer = OutputLayout(stack.output_bucket, stack.parameters["OutputPrefix"])
    rows = {j["job_id"]: j for j in local.jobs()}
    emulator = local.emulator
    assert emulator is not None
    per_job = Counter(str((e.request.get("metadata") or {}).get("session_id")) for e in emulator.executions.values())
    report.executions = len(emulator.executions)
    report.requests = sum(v for k, v in emulator.requests.items() if k.startswith(("GET /v1", "POST /v1")))
    report.faults = {k: emulator.requests[k] for k in ("429", "5xx", "hang") if emulator.requests[k]}
    outputs = set(stack.output_keys())
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    versions = [
        v
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=stack.input_bucket)
        for v in page.get("Versions", [])
    ]
    report.versions = len(versions)
    accounted: set[tuple[str, str]] = set()
    for v in versions:
        key, vid = v["Key"], v["VersionId"]
        job_id = job_id_for(stack.input_bucket, key, ObjectVersion.from_response(v))
        row = rows.get(job_id)
        where = f"{key}@{vid[:8]}"
        if row is None:
            report.lost += 1
            report.problems.append(f"lost: {where} has no job")
            continue
        status = row["status"]
        if status == "skipped":
            outcomes["skipped"] += 1
            accounted.add((key, vid))
            continue
        if status != "delivered":
            report.left_in_flight += 1
            report.problems.append(f"in flight: {where} is {status}")
            continue
        folder = f"{writer.folder(key)}versions/{vid}/"
        docs = [k for k in (folder + "result.json", folder + "error.json") if k in outputs]
        if len(docs) != 1:
            report.lost += 1
            report.problems.append(f"{'lost' if not docs else 'two outcomes'}: {where} {docs}")
            continue
        accounted.add((key, vid))
        document = json.loads(s3.get_object(Bucket=stack.output_bucket, Key=docs[0])["Body"].read())
        outcomes[str(row.get("outcome"))] += 1
        if document["source"]["version_id"] != vid or document["source"]["key"] != key:
            report.wrong += 1
            report.problems.append(f"wrong: {where} document names {document['source']}")
        if docs[0].endswith("result.json"):
            body = s3.get_object(Bucket=stack.input_bucket, Key=key, VersionId=vid)["Body"].read()
            got = (document.get("response") or {}).get("file", {}).get("sha256")
            if got != hashlib.sha256(body).hexdigest():
                report.wrong += 1
                report.problems.append(f"wrong: {where} holds another file's extraction")
        else:
            message = (document.get("error") or {}).get("message") or ""
            reasons[_reason(message)] += 1
            if not message:
                report.unexplained_failures += 1
        extra = per_job[job_id] - 1
        # Explained: an ambiguous attempt on the row, or an execution recorded as this job's orphan.
        on_record = max(len(row.get("ambiguous_attempts") or []), len(row.get("orphan_execution_ids") or []))
        if extra > 0:
            report.duplicates_explained += min(extra, on_record)
            report.duplicates_unexplained += max(0, extra - on_record)
            if extra > on_record:
                report.problems.append(f"duplicate: {where} has {per_job[job_id]} executions, {on_record} on record")
    report.outcomes = dict(outcomes)
    report.failure_reasons = dict(reasons)
    # The newest version's document is the one at the key's stable path.
    current = {v["Key"]: v["VersionId"] for v in versions if v.get("IsLatest")}
    for key, vid in current.items():
        row = rows.get(job_id_for(stack.input_bucket, key, ObjectVersion.of(vid, None)))
        if row is None or row["status"] != "delivered":
            continue
        result, error = writer.latest_keys(key)
        stable = result if result in outputs else error if error in outputs else None
        if stable is None or (result in outputs and error in outputs):
            report.stale += 1
            report.problems.append(f"stale: {key} stable path holds {stable}")
            continue
        document = json.loads(s3.get_object(Bucket=stack.output_bucket, Key=stable)["Body"].read())
        if document["source"]["version_id"] != vid:
            report.stale += 1
            report.problems.append(f"stale: {key} shows version {document['source']['version_id']}, newest is {vid}")
    # Every DLQ entry accounted for: the object version it names has an outcome anyway.
    sqs = boto3.client("sqs")
    dlq = stack.queues.get("IngestDLQ")
    while dlq:
        messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not messages:
            break
        for m in messages:
            report.dlq_entries += 1
            detail = json.loads(m["Body"]).get("detail", {})
            obj = detail.get("object", {})
            if (obj.get("key"), obj.get("version-id")) not in accounted:
                report.dlq_unaccounted += 1
    report.parked_deliveries = len(local.aws.parked)
    report.left_in_flight = sum(1 for r in rows.values() if r["status"] not in ("delivered", "skipped"))


def _reason(message: str) -> str:
    if "could not start" in message:
        return "not started in time"
    if "no final status" in message:
        return "stuck at VLM Run (timed out)"
    if "cancelled" in message:
        return "cancelled"
    if "emulated failure" in message or "could not extract" in message:
        return "failed at VLM Run"
    return message[:40]


def main(args: Any) -> int:
    import logging

    # Every fault here is logged by the handlers as it would be in CloudWatch; the table is what matters.
    logging.getLogger("vlmwatch").setLevel(logging.CRITICAL)
    config = ChaosConfig(files=args.files, webhook=args.webhook, seed=args.seed, timeout=args.timeout)
    print(f"chaos: {config.files} files, webhooks {'on' if config.webhook else 'off'}, seed {config.seed}")
    print(json.dumps({k: v for k, v in asdict(config).items() if k not in ("files", "webhook", "seed")}))
    report = run(config)
    print()
    print(report.table())
    for problem in report.problems[:30]:
        print(f"  ! {problem}")
    print("\nINVARIANTS HOLD" if report.ok else "\nINVARIANTS BROKEN")
    return 0 if report.ok else 1
