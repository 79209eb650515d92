"""What must hold after a chaos run, whatever was done to it, and the table that says so.

:func:`check` reads the input bucket's versions, the job rows, the output bucket, the ingest DLQ and the
emulator's own record, and fills a :class:`ChaosReport`: the invariants (nothing lost, wrong or stale, no
unexplained duplicate, nothing left in flight, every failure and DLQ entry accounted for) and, beside
them, what the account's bad days did (requests sent while a fault was active and while the breaker was
open, files failed for the account's reason, how long after a fault ended the breaker closed and the
last document of a job that waited on it came, orphans counted both ways).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3

from vlmwatch.core.identity import ObjectVersion, job_id_for
from vlmwatch.core.layout import OutputLayout
from vlmwatch.core.lifecycle import SETTLED, Status
from vlmwatch.flows.request import sent_fingerprint
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator.state import Execution
from vlmwatch_local.harness.breaker_watch import REASON_FOR_FAULT, BreakerWatch

# Error text that says the account, not the file, was the trouble (the emulator's and the client's words).
ACCOUNT_REASONS = (
    ("credits (402)", re.compile(r"\b402\b|credit|quota|insufficient|billing|payment", re.IGNORECASE)),
    ("key refused (401/403)", re.compile(r"\b40[13]\b|api key|unauthori[sz]ed|forbidden|credential", re.IGNORECASE)),
    ("service down (5xx)", re.compile(r"\b50[0-4]\b|unavailable|server error|connect", re.IGNORECASE)),
)


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
    # What the account's bad days did (measures beside the invariants, not part of ``ok``).
    account_windows: list[dict[str, Any]] = field(default_factory=list)  # the emulator's record
    during_faults: dict[str, int] = field(default_factory=dict)  # API requests sent while each was active
    refused_by_faults: dict[str, int] = field(default_factory=dict)  # of those, answered by the fault
    account_failures: dict[str, int] = field(default_factory=dict)  # error documents blaming the account
    fault_end_to_last_document: dict[str, float] = field(default_factory=dict)  # seconds, by fault
    # The breaker as the run saw it (None: not watched): per reason (requests, POSTs, seconds open)...
    while_breaker_open: dict[str, tuple[dict[str, int], float]] | None = None
    breaker_episodes: int = 0  # ...how many times it opened, the probes it let through...
    breaker_probes: int = 0
    # ...and per fault: jobs that waited on it, fault end -> breaker closed and -> their last document.
    breaker_recovery: dict[str, dict[str, Any]] = field(default_factory=dict)
    orphans_by_id: int = 0  # extra executions the row names (orphan_execution_ids)
    orphans_by_attempt: int = 0  # extra executions covered only by an ambiguous attempt on the row
    answers_lost: int = 0  # executions whose POST answer never reached vlmwatch (the emulator's hang)
    adopted: int = 0  # rows tracking an execution an ambiguous attempt made (adopted on evidence)
    foreign_tracked: int = 0  # rows tracking an execution made for another job
    state_machines: str = ""  # stepfunctions mode: executions, still running, state transitions

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
            ("account faults (active for)", self._windows() or "none"),
            ("requests sent while a fault was active", self._during() or "-"),
            ("breaker open (times opened, probes, seconds)", self._breaker_open()),
            ("requests sent while the breaker was open", self._while_open()),
            ("failed for an account reason", _counts(self.account_failures) or "0"),
            ("fault end -> last document", self._recovery() or "-"),
            ("fault end -> breaker closed", self._after_fault("closed") or "-"),
            ("fault end -> last document of a job that waited on the breaker", self._after_fault("last_document")),
            ("orphans on record by id", self.orphans_by_id),
            ("orphans on record by ambiguous attempt only", self.orphans_by_attempt),
            ("adopted after an ambiguous POST", f"{self.adopted} ({self.answers_lost} POST answers lost)"),
            ("rows tracking another job's execution", self.foreign_tracked),
            ("state machines (stepfunctions mode)", self.state_machines or "-"),
            ("wall time", f"{self.wall_seconds:.0f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)

    def _windows(self) -> str:
        return ", ".join(
            f"{w['kind']} {w['seconds']:.0f} s" if w["end"] is not None else f"{w['kind']} (never lifted)"
            for w in self.account_windows
        )

    def _during(self) -> str:
        refused, during = self.refused_by_faults, sorted(self.during_faults.items())
        return ", ".join(f"{kind} {n} ({refused.get(kind, 0)} refused)" for kind, n in during)

    def _recovery(self) -> str:
        recovery = sorted(self.fault_end_to_last_document.items())
        return ", ".join(f"{kind} {seconds:+.0f} s" for kind, seconds in recovery)

    def _breaker_open(self) -> str:
        if self.while_breaker_open is None:
            return "-"
        spans = ", ".join(f"{reason} {s:.0f} s" for reason, (_, s) in sorted(self.while_breaker_open.items()))
        opened = f"{self.breaker_episodes} times, {self.breaker_probes} probes"
        return f"{opened} ({spans})" if self.breaker_episodes else "never"

    def _while_open(self) -> str:
        if self.while_breaker_open is None:
            return "-"
        parts = []
        for reason, (sent, _) in sorted(self.while_breaker_open.items()):
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(sent.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{reason} {sum(sent.values())}" + (f" ({kinds})" if kinds else ""))
        return ", ".join(parts) or "0"

    def _after_fault(self, measure: str) -> str:
        parts = []
        for kind, seen in sorted(self.breaker_recovery.items()):
            seconds = seen[measure]
            if not seen["episodes"]:
                parts.append(f"{kind}: breaker not opened for it")
                continue
            label = kind
            if REASON_FOR_FAULT[kind].value not in seen["reasons"]:
                label = f"{kind} (breaker open for {'+'.join(seen['reasons'])})"
            if measure == "closed":
                parts.append(f"{label} {seconds:+.0f} s" if seconds is not None else f"{label} (still open)")
            elif not seen["jobs"]:
                parts.append(f"{label}: no job waited")
            else:
                undelivered = f", {seen['undelivered']} without a document" if seen["undelivered"] else ""
                when = "none delivered"
                if seconds is not None:
                    when = f"{seconds:+.0f} s (half by {seen['median_document']:+.0f} s)"
                parts.append(f"{label} {when} ({seen['jobs']} jobs waited{undelivered})")
        return ", ".join(parts) or "-"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def account_reason(message: str) -> str | None:
    """Which account trouble an error message blames, if any (a file's own trouble: None)."""
    if "could not download the input file" in message:
        return None  # the input's URL, not the account
    return next((name for name, pattern in ACCOUNT_REASONS if pattern.search(message)), None)


# -- the invariants -----------------------------------------------------------------------------------


def check(local: LocalStack, report: ChaosReport, watch: BreakerWatch | None = None) -> None:
    """Every object version has exactly one outcome; no document holds another file's response; the newest
    version's document is at the key; one execution per version unless an ambiguous submit is on record;
    nothing left in flight; every DLQ entry accounted for; every failure says why. With ``watch``, what
    the breaker did too."""
    s3 = boto3.client("s3")
    stack = local.stack
    writer = OutputLayout(stack.output_bucket, stack.parameters["OutputPrefix"])
    rows = {j["job_id"]: j for j in local.jobs()}
    emulator = local.emulator
    assert emulator is not None
    by_job: dict[str, list[Execution]] = {}
    for execution in list(emulator.executions.values()):
        by_job.setdefault(str((execution.request.get("metadata") or {}).get("session_id")), []).append(execution)
    per_job = Counter({job_id: len(made) for job_id, made in by_job.items()})
    report.executions = len(emulator.executions)
    report.requests = sum(v for k, v in emulator.requests.items() if k.startswith(("GET /v1", "POST /v1")))
    report.faults = {k: emulator.requests[k] for k in ("429", "5xx", "hang") if emulator.requests[k]}
    outputs = set(stack.output_keys())
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    account: Counter[str] = Counter()
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
        if status == Status.SKIPPED:
            outcomes["skipped"] += 1
            accounted.add((key, vid))
            continue
        if status != Status.DELIVERED:
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
            blamed = account_reason(message)
            if blamed:
                account[blamed] += 1
        extra = per_job[job_id] - 1
        # Explained: an ambiguous attempt on the row, or an execution recorded as this job's orphan.
        on_record = max(len(row.get("ambiguous_attempts") or []), len(row.get("orphan_execution_ids") or []))
        if extra > 0:
            report.duplicates_explained += min(extra, on_record)
            report.duplicates_unexplained += max(0, extra - on_record)
            if extra > on_record:
                report.problems.append(f"duplicate: {where} has {per_job[job_id]} executions, {on_record} on record")
        _orphans(report, row, by_job.get(job_id, []), extra)
    report.outcomes = dict(outcomes)
    report.failure_reasons = dict(reasons)
    report.account_failures = dict(account)
    _account_faults(report, emulator, rows.values())
    if watch is not None:
        report.while_breaker_open = watch.while_open()
        report.breaker_episodes = max(watch.opened, len(watch.episodes))
        report.breaker_probes = watch.probes
        report.breaker_recovery = watch.recovery(report.account_windows, rows)
    # The newest version's document is the one at the key's stable path.
    current = {v["Key"]: v["VersionId"] for v in versions if v.get("IsLatest")}
    for key, vid in current.items():
        row = rows.get(job_id_for(stack.input_bucket, key, ObjectVersion.of(vid, None)))
        if row is None or row["status"] != Status.DELIVERED:
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
    report.left_in_flight = sum(1 for r in rows.values() if r["status"] not in SETTLED)


def _orphans(report: ChaosReport, row: dict[str, Any], made: list[Execution], extra: int) -> None:
    """Executions per job at the emulator against the row, both ways: the extra ones the row names by id
    (``orphan_execution_ids``) or only counts (``ambiguous_attempts``); and whether the one it tracks was
    made by an ambiguous attempt (its POST answer was lost, or it sent an input whose fingerprint the row
    kept for echo evidence): adopted, not re-sent."""
    ids = {e.id for e in made}
    tracked = row.get("execution_id")
    if tracked and tracked not in ids:
        report.foreign_tracked += 1
    if extra > 0:
        by_id = min(extra, len(ids & set(row.get("orphan_execution_ids") or [])))
        report.orphans_by_id += by_id
        report.orphans_by_attempt += min(extra - by_id, len(row.get("ambiguous_attempts") or []))
    kept = {ref.split(":", 1)[1] for ref in row.get("ambiguous_inputs") or [] if ":" in ref}
    ambiguous = {e.id for e in made if not e.answered or (kept and sent_fingerprint(e.request) in kept)}
    if tracked in ambiguous:
        report.adopted += 1


def _account_faults(report: ChaosReport, emulator: Any, rows: Any) -> None:
    """The emulator's record of the account faults, and how long after each ended the last document came."""
    record = emulator.faults.record(emulator.config, emulator.now())
    report.account_windows = record["windows"]
    report.during_faults = record["during"]
    report.refused_by_faults = record["refused"]
    report.answers_lost = sum(not e.answered for e in list(emulator.executions.values()))
    last = max((float(r["delivered_at"]) for r in rows if r.get("delivered_at")), default=None)
    for window in report.account_windows:
        if window["end"] is not None and last is not None:
            report.fault_end_to_last_document[window["kind"]] = last - window["end"]


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
