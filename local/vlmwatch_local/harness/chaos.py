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
  to it: a botocore event handler, no library code replaced; see :mod:`.injection`);
* the account's bad days, when asked for (:class:`AccountScenario`): a whole-service outage
  (``--outage SECONDS``, once a third of the files are dropped), no credits left after N executions
  (``--credits N``, topped up ``--top-up-after SECONDS`` after they ran out), a revoked API key
  (``--revoked-key SECONDS``, once half of the files are dropped).

``--no-echo`` turns off the emulator's echo of an execution's ``inputs`` (the SDK's bare response shape),
so the orphans and adoptions of a run can be compared with and without that evidence.

Time is compressed (a 1 s client timeout, deadlines of a minute, leases of seconds) so a 1,000-file run
fits in about 10 minutes on 2 cores. The invariants checked at the end, and what the account's bad days
did, are in :mod:`.invariants`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import boto3

from vlmwatch.adapters.breaker import CircuitBreaker
from vlmwatch.core.lifecycle import SETTLED
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import Emulator, EmulatorConfig
from vlmwatch_local.harness.breaker_watch import BreakerWatch
from vlmwatch_local.harness.clock import Clock
from vlmwatch_local.harness.injection import FaultInjector
from vlmwatch_local.harness.invariants import ChaosReport, check


@dataclass
class ChaosConfig:
    files: int = 1000
    webhook: bool = False
    polling_mode: str = "schedule"  # or "stepfunctions": one state machine per job (the local Step Functions)
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
    # The account's bad days (off unless set; see AccountScenario).
    outage_seconds: float = 0.0  # a whole-service outage, once a third of the files are dropped
    credits: int | None = None  # the account pays for this many executions, then answers 402...
    top_up_after: float = 30.0  # ...until topped up, this many seconds after the credits ran out
    revoked_key_seconds: float = 0.0  # the API key refused (401), once half of the files are dropped
    echo_inputs: bool = True  # executions echo their inputs (evidence to adopt an ambiguous submit's)
    # Compressed time for the pipeline's own waits: how long a claim, an ambiguous submit's evidence window
    # and the sweeper's delivery grace last (2, 15 and 5 min by default in AWS), and the breaker's probe
    # interval and ramp (30 s and 60 s). The smokes compress them further than the 1,000-file run.
    grace_seconds: int = 8
    breaker_probe_seconds: int = 5
    breaker_ramp_seconds: int = 10

    @property
    def scenarios(self) -> list[str]:
        out = []
        if self.outage_seconds:
            out.append(f"outage {self.outage_seconds:g} s after a third of the files")
        if self.credits is not None:
            out.append(f"no credits after {self.credits} executions, topped up {self.top_up_after:g} s later")
        if self.revoked_key_seconds:
            out.append(f"key revoked {self.revoked_key_seconds:g} s after half of the files")
        return out


class AccountScenario:
    """The account's bad days, played on the emulator during a run; the harness's clock says when.

    * outage: :meth:`Emulator.outage` once :data:`OUTAGE_AT` of the files are dropped;
    * credits: the account can pay for ``credits`` executions (set from the start); ``top_up_after``
      seconds after they ran out (the emulator's no-credits window opened), a top-up without limit;
    * revoked key: :meth:`Emulator.revoke_key` once :data:`REVOKE_AT` of the files are dropped,
      :meth:`Emulator.restore_key` ``revoked_key_seconds`` later.

    The emulator records when each was active and the requests it saw meanwhile (``faults``).
    """

    OUTAGE_AT = 1 / 3
    REVOKE_AT = 1 / 2

    def __init__(self, config: ChaosConfig, emulator: Emulator, clock: Clock) -> None:
        self._config = config
        self._emulator = emulator
        self._clock = clock
        self._outage_ends: float | None = None
        self._restore_at: float | None = None
        self._restored = False
        self._topped_up = False

    def step(self, dropped: float) -> None:
        """Start or lift what is due, ``dropped`` being the share of the files dropped so far."""
        config, emulator, now = self._config, self._emulator, self._clock()
        if config.outage_seconds and self._outage_ends is None and dropped >= self.OUTAGE_AT:
            emulator.outage(config.outage_seconds)
            self._outage_ends = now + config.outage_seconds
        if config.revoked_key_seconds and self._restore_at is None and dropped >= self.REVOKE_AT:
            emulator.revoke_key()
            self._restore_at = now + config.revoked_key_seconds
        if self._restore_at is not None and not self._restored and now >= self._restore_at:
            emulator.restore_key()
            self._restored = True
        ran_out = self._ran_out_at()
        if ran_out is not None and not self._topped_up and now >= ran_out + config.top_up_after:
            emulator.top_up()
            self._topped_up = True

    def _ran_out_at(self) -> float | None:
        if self._config.credits is None:
            return None
        return next((w.start for w in self._emulator.faults.windows if w.kind == "no_credits"), None)

    @property
    def pending(self) -> bool:
        """A fault still to come or not yet lifted: the run goes on until it is (then the documents after
        it can be timed)."""
        config, now = self._config, self._clock()
        if config.outage_seconds and (self._outage_ends is None or now < self._outage_ends):
            return True
        if config.revoked_key_seconds and not self._restored:
            return True
        return self._ran_out_at() is not None and not self._topped_up


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
        credits_executions=config.credits,
        echo_inputs=config.echo_inputs,
        seed=config.seed,
    )
    env = {
        "POLL_BASE_SECONDS": "1",
        "POLL_CAP_SECONDS": "4",
        "JOB_DEADLINE_SECONDS": str(config.job_deadline_seconds),
        "SUBMIT_LEASE_SECONDS": "5",
        "SUBMIT_DEADLINE_SECONDS": "900",
        "EVIDENCE_WINDOW_SECONDS": str(config.grace_seconds),
        "DELIVERY_GRACE_SECONDS": str(config.grace_seconds),
        "POLL_CLAIM_SECONDS": str(config.grace_seconds),
        "VLMRUN_TIMEOUT_SECONDS": "1",
        "POLLER_MAX_JOBS": "300",
        "POLLER_CONCURRENCY": "8",
        "BREAKER_PROBE_SECONDS": str(config.breaker_probe_seconds),
        "BREAKER_RAMP_SECONDS": str(config.breaker_ramp_seconds),
    }
    if config.webhook:
        env["POLL_CAP_SECONDS"] = "6"  # the safety net; callbacks do the work
    clock = Clock()
    faults = FaultInjector(rng, config.crash_rate, clock)
    report = ChaosReport(files=config.files)
    started = clock()
    # moto in this process (no HTTP between the handlers and AWS); VLM Run and the function URL served on
    # ports, so a hanging POST meets a real client timeout.
    local = LocalStack(
        emulator_config=emulator,
        env=env,
        webhook=config.webhook,
        polling_mode="stepfunctions" if config.polling_mode == "stepfunctions" else "schedule",
        parameters={"AgentName": "chaos:v1"},
        clock=clock,
        moto="in-process",
        serve=True,
    )
    with local:
        assert local.emulator is not None
        scenario = AccountScenario(config, local.emulator, clock)
        # The breaker through its own adapter (no handler's cached copy is touched), every tick.
        watch = BreakerWatch(CircuitBreaker(boto3.client("dynamodb"), local.stack.table, clock=clock), clock)
        watch.log_requests(local.emulator.app)
        faults.install(local.stack.output_bucket)
        try:
            _drive(local, config, rng, faults, scenario, report, log, clock, watch)
        finally:
            faults.uninstall()
        report.wall_seconds = clock() - started
        watch.sample(local.aws.rows.values())
        check(local, report, watch)
        if local.machines is not None:
            machines = local.machines
            machines.run_due()  # a release ends its execution on the next turn, as in AWS
            report.state_machines = (
                f"{len(machines.executions)} executions ({machines.running} still polling), "
                f"{machines.transitions} state transitions ({machines.transitions / max(report.versions, 1):.1f}"
                " per version)"
            )
    report.crashes = dict(faults.crashes)
    return report


def _drive(
    local: LocalStack,
    config: ChaosConfig,
    rng: random.Random,
    faults: FaultInjector,
    scenario: AccountScenario,
    report: ChaosReport,
    log: Any,
    clock: Clock,
    watch: BreakerWatch,
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
    dropped = 0
    while clock() < deadline:
        now = clock() - t0
        while drops and drops[0][0] <= now:
            _, i = drops.pop(0)
            dropped += 1
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
        scenario.step(dropped / config.files)
        done = aws.step(ingest_batches=3)  # interleave: AWS runs ingest, poller and delivery side by side
        watch.sample(aws.rows.values())
        if now - last_check < 0.5:
            if not any(done.values()):
                clock.sleep(0.05)  # a turn that found nothing to do: do not spin (every turn runs the poller)
            continue
        last_check = now
        jobs = list(aws.rows.values())  # the job rows as the table's stream last wrote them: no scan
        settled = sum(j["status"] in SETTLED for j in jobs)
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
            and not scenario.pending
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


def main(args: Any) -> int:
    import logging

    # Every fault here is logged by the handlers as it would be in CloudWatch; the table is what matters.
    logging.getLogger("vlmwatch").setLevel(logging.CRITICAL)
    config = ChaosConfig(
        files=args.files,
        webhook=args.webhook,
        polling_mode=args.polling_mode,
        seed=args.seed,
        timeout=args.timeout,
        outage_seconds=args.outage or 0.0,
        credits=args.credits,
        top_up_after=args.top_up_after,
        revoked_key_seconds=args.revoked_key or 0.0,
        echo_inputs=not args.no_echo,
    )
    print(
        f"chaos: {config.files} files, webhooks {'on' if config.webhook else 'off'}, "
        f"polling mode {config.polling_mode}, seed {config.seed}, inputs echoed {'yes' if config.echo_inputs else 'no'}"
    )
    if config.scenarios:
        print(f"account faults: {'; '.join(config.scenarios)}")
    print(
        json.dumps({k: v for k, v in asdict(config).items() if k not in ("files", "webhook", "polling_mode", "seed")})
    )
    report = run(config)
    print()
    print(report.table())
    for problem in report.problems[:30]:
        print(f"  ! {problem}")
    print("\nINVARIANTS HOLD" if report.ok else "\nINVARIANTS BROKEN")
    return 0 if report.ok else 1
