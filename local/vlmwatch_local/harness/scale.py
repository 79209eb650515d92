"""A 100,000-file model: the real poller, budget, slots and delivery with 1k, 10k and 100k files in flight.

``python -m vlmwatch_local.harness.scale [--sizes 1000,10000,100000] [--rpm 600]`` runs, per size, the real
PollerFunction (``flows.sweeper`` / ``flows.tracking``, the request budget, the breaker and the in-flight
slots) and the real CompleteFunction (``flows.delivery``) in-process against moto and the VLM Run emulator,
in virtual time (the harnesses' :class:`~vlmwatch_local.harness.clock.Clock`): the poller once a virtual
minute, the table's stream pumped to the complete handler a virtual second later.

Nothing is uploaded or ingested: ``files`` jobs are seeded in bulk *in flight* (``submitted``, in the
in-flight index, due ten seconds after their start), as a drop of that size leaves them a minute after it
landed, with their input objects in S3 and their executions at the emulator (each completes
``job_seconds`` after its start, with one artifact). Seeding writes moto's and the emulator's state
directly (no notifications, no stream records): seconds for 100k rows instead of an hour of uploads.

Per size it prints:

* the longest poller run: wall seconds in-process, and the same run *modelled for AWS* (the handler's own
  Python time, plus every DynamoDB/S3/EventBridge call and VLM Run request at a typical latency, calls made
  on the poller's worker threads divided by ``POLLER_CONCURRENCY``; moto's own time left out, because moto
  answers an index query by walking the whole table where DynamoDB reads one page), the jobs it claimed and
  the pages it read. The poller's Lambda context counts that modelled time against the template's timeout,
  so the run's own guard (no page that could outlast the minute or the margin) works on AWS time, not on
  how slow moto is;
* the hottest DynamoDB item (writes per partition key: every PutItem/UpdateItem/DeleteItem a handler
  sends, conditional failures included, as they consume write units) and the hottest index partition
  (from the stream's old and new images: which index entries each write puts or deletes, in write units of
  the projected size), in writes per *virtual* second. A poller run's writes land at the modelled second
  they were sent (the run is one invocation, its calls one after the other); every write of one stream pump
  lands in one virtual second, so the peak is an upper bound of the rate AWS would see;
* VLM Run requests and AWS dollars per 1,000 documents (:func:`~vlmwatch_local.harness.perf.cost_per_1000`,
  at :data:`~vlmwatch_local.harness.perf.PRICES`, with the modelled durations for Lambda GB-s);
* the time to drain: until the last document (measured), or, for sizes above ``--full-max``, measured over
  ``--window`` poller runs and extrapolated at the steady rate of the window's second half (said so), against
  the rate floor (the requests the documents took, at the plan's rate).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vlmwatch_local.cloud.loops import LambdaContext, scheduled_event
from vlmwatch_local.harness.clock import Clock

START = 1_800_000_000  # on a minute boundary: the budget's windows and the poller's schedule line up
REGION = "us-east-1"
AGENT = "doc-extractor:v1"
PARTITION_LIMIT = 1000  # write units a second one partition (one key value) takes in DynamoDB
POLLER_TIMEOUT = 300  # template.yaml: PollerFunction Timeout (Globals: 60)
TARGET_RUN_SECONDS = 60  # "well inside": a run should fit the Globals timeout too
# Typical latency per call inside AWS (us-east-1, same region), for the modelled run time.
LATENCY = {"dynamodb": 0.006, "s3": 0.025, "events": 0.015, "secretsmanager": 0.02, "states": 0.02}
VLMRUN_LATENCY = 0.25  # a VLM Run API request from Lambda
PARSE_SECONDS_PER_MB = 0.05  # botocore parsing a DynamoDB answer
TEMPLATE_CONCURRENCY = 4  # template.yaml: PollerConcurrency default (runs here use 1, see run_size)
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
READS = frozenset({"GetItem", "Query", "Scan"})
READ_UNITS = "units:dynamodb-read"  # read units by size, beside the calls (perf counts one per call)


# -- meters ---------------------------------------------------------------------------------------


class CallMeter:
    """Counts and times what the handlers send: AWS calls (botocore events of the runtime's session) and
    VLM Run requests (a WSGI wrapper around the emulator), and the writes per item per virtual second.

    While a poller run is metered (:meth:`run_from`), a write's virtual second is the run's start plus the
    modelled time it had taken so far; the job table's applied writes are queued with their seconds, in
    order, for the stream reader (each applied write is one stream record)."""

    def __init__(self, clock: Clock, concurrency: int, table: str = "") -> None:
        self._clock = clock
        self._concurrency = max(1, concurrency)
        self._table = table
        self._lock = threading.Lock()
        self._local = threading.local()
        self._run: tuple[int, tuple[float, float, float]] | None = None  # (start second, mark at its start)
        self.calls: Counter[str] = Counter()
        self.item_writes: Counter[tuple[str, int]] = Counter()  # (job_id, virtual second)
        self.write_seconds: deque[int] = deque()  # the virtual second of each applied write to the job table
        self.in_calls = 0.0  # wall seconds inside moto and the emulator
        self.modelled = 0.0  # those calls at AWS latency (worker threads' share divided by the concurrency)

    def attach(self, session: Any, emulator: Any) -> None:
        session.register("before-parameter-build", self._params)
        session.register("before-call", self._before)
        session.register("after-call", self._after)
        inner = emulator.app.wsgi_app

        def timed(environ: dict[str, Any], start_response: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(environ, start_response)
            finally:
                self._spent(time.perf_counter() - started, VLMRUN_LATENCY)

        emulator.app.wsgi_app = timed

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        if model.service_model.endpoint_prefix != "dynamodb" or name not in WRITES:
            return
        key = (params.get("Key") or params.get("Item") or {}).get("job_id", {}).get("S", "?")
        second = self.second()
        self._local.write = (second, params.get("TableName") == self._table)
        with self._lock:
            self.item_writes[(key, second)] += 1

    def _before(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[f"{model.service_model.endpoint_prefix}:{model.name}"] += 1
        self._local.started = (time.perf_counter(), LATENCY.get(model.service_model.endpoint_prefix, 0.02))

    def _after(self, model: Any, parsed: Any = None, **_: Any) -> None:
        write = getattr(self._local, "write", None)
        if write is not None and model.name in WRITES:
            self._local.write = None
            if write[1] and not (isinstance(parsed, dict) and "Error" in parsed):
                with self._lock:
                    self.write_seconds.append(write[0])
        started = getattr(self._local, "started", None)
        if started is None:
            return
        self._local.started = None
        latency = started[1]
        if model.name in READS and isinstance(parsed, dict):
            size = _returned_bytes(model.name, parsed)
            # DynamoDB answers at most 1 MB a page (moto: everything at once), and botocore parses each one in
            # the function (~50 ms a MB); it bills 4 KB steps, halved for eventually consistent reads (every
            # index query).
            latency = latency * max(1, math.ceil(size / 1024**2)) + PARSE_SECONDS_PER_MB * size / 1024**2
            units = max(1, math.ceil(size / 4096)) / (1 if model.name == "GetItem" else 2)
            with self._lock:
                self.calls[READ_UNITS] += units
        self._spent(time.perf_counter() - started[0], latency)

    def _spent(self, seconds: float, latency: float) -> None:
        worker = threading.current_thread() is not threading.main_thread()
        with self._lock:
            self.in_calls += seconds
            self.modelled += latency / self._concurrency if worker else latency

    def mark(self) -> tuple[float, float]:
        with self._lock:
            return self.in_calls, self.modelled

    def run_from(self, second: int | None) -> None:
        """Meter a poller run starting at virtual ``second`` (None: the run is over)."""
        if second is None:
            self._run = None
            return
        in_calls, modelled = self.mark()
        self._run = (second, (time.perf_counter(), in_calls, modelled))

    def run_seconds(self) -> float:
        """The metered run's modelled seconds so far: its own Python time (wall time outside moto and the
        emulator) plus its calls at AWS latency."""
        if self._run is None:
            return 0.0
        wall, in_calls, modelled = self._run[1]
        now_in, now_modelled = self.mark()
        return max(0.0, time.perf_counter() - wall - (now_in - in_calls)) + (now_modelled - modelled)

    def second(self) -> int:
        if self._run is not None:
            return self._run[0] + int(self.run_seconds())
        return int(self._clock())


def _returned_bytes(operation: str, parsed: dict[str, Any]) -> int:
    from vlmwatch.adapters.job_queries import item_size

    items = [parsed["Item"]] if operation == "GetItem" and parsed.get("Item") else parsed.get("Items") or []
    return sum(item_size(item) for item in items)


@dataclass
class IndexMeter:
    """Index partition writes, from the stream's old and new images: the index entries each write put or
    deleted, by ``index=hash value``, per virtual second (and in write units of the projected size)."""

    indexes: list[tuple[str, list[str], bool]]  # (name, key attributes (hash first), projects all)
    writes: Counter[tuple[str, int]] = field(default_factory=Counter)
    units: Counter[tuple[str, int]] = field(default_factory=Counter)

    @classmethod
    def of_table(cls, description: dict[str, Any]) -> IndexMeter:
        found = []
        for index in description.get("GlobalSecondaryIndexes", []):
            keys = sorted(index["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
            found.append(
                (index["IndexName"], [k["AttributeName"] for k in keys], index["Projection"]["ProjectionType"] == "ALL")
            )
        return cls(found)

    def record(self, old: dict[str, Any] | None, new: dict[str, Any] | None, second: int) -> None:
        from vlmwatch.adapters.job_queries import item_size

        for name, keys, projects_all in self.indexes:
            before = _index_key(old, keys)
            after = _index_key(new, keys)
            touched: list[tuple[str, dict[str, Any]]] = []
            if before is not None and before != after:
                touched.append((before, old or {}))  # the old entry deleted
            if after is not None and (before != after or (projects_all and old != new)):
                touched.append((after, new or {}))  # the new entry put (or rewritten: a projected attribute)
            for value, image in touched:
                size = item_size(image) if projects_all else 100
                self.writes[(f"{name}={value}", second)] += 1
                self.units[(f"{name}={value}", second)] += max(1, math.ceil(size / 1024))


def _index_key(image: dict[str, Any] | None, keys: list[str]) -> str | None:
    if not image or any(k not in image for k in keys):
        return None
    return str(next(iter(image[keys[0]].values())))  # the partition (hash) value; the sort key may move


class StreamReader:
    """Reads the job table's stream on its own iterator (the loops keep theirs) into an :class:`IndexMeter`.

    Each record gets the virtual second of its write where the call meter queued one (a poller run's),
    else the second of the read."""

    def __init__(self, stack: Any, meter: IndexMeter, seconds: deque[int] | None = None) -> None:
        import boto3

        self._client = boto3.client("dynamodbstreams", region_name=stack.region)
        self._arn = stack.stream_arn
        self._meter = meter
        self._seconds: deque[int] = seconds if seconds is not None else deque()
        self._iterators: dict[str, str] = {}

    def read(self, second: int) -> None:
        try:
            self._read(second)
        finally:
            self._seconds.clear()  # what is left did not match a record: never carried to the next read

    def _read(self, second: int) -> None:
        shards = self._client.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        for shard in shards:
            sid = shard["ShardId"]
            if sid not in self._iterators:
                self._iterators[sid] = self._client.get_shard_iterator(
                    StreamArn=self._arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while True:
                page = self._client.get_records(ShardIterator=self._iterators[sid], Limit=1000)
                self._iterators[sid] = page.get("NextShardIterator") or self._iterators[sid]
                for record in page.get("Records", []):
                    data = record["dynamodb"]
                    at = self._seconds.popleft() if self._seconds else second
                    self._meter.record(data.get("OldImage"), data.get("NewImage"), at)
                if len(page.get("Records", [])) < 1000:
                    break


# -- seeding --------------------------------------------------------------------------------------


def seed(local: Any, files: int, job_seconds: int, *, spread_seconds: int = 60) -> int:
    """``files`` jobs in flight, written straight into moto and the emulator (no uploads, no events, no
    stream records). Job ``i`` started at ``START + i * spread / files``; its execution completes
    ``job_seconds`` later with one artifact. Returns the in-flight count."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.s3.models import s3_backends

    from vlmwatch.core.identity import ObjectVersion, job_id_for
    from vlmwatch.core.job import Job
    from vlmwatch.core.lifecycle import Status
    from vlmwatch.runtime import wiring
    from vlmwatch_local.emulator.state import Execution

    settings = wiring.settings()
    store = wiring.job_store()
    route = settings.default_route()
    stack, emulator = local.stack, local.emulator
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(stack.table)
    s3 = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    rng = random.Random(files)
    stream, table.stream_shard = table.stream_shard, None  # the seed is the starting state, not traffic
    try:
        for i in range(files):
            key = f"scale/{i:06d}.pdf"
            obj = s3.put_object(stack.input_bucket, key, b"%PDF scale", disable_notification=True)
            version = ObjectVersion.of(obj.version_id, obj.etag)
            job_id = job_id_for(stack.input_bucket, key, version)
            started = START + int(i * spread_seconds / files)
            execution_id = f"{rng.getrandbits(128):032x}"
            artifact = f"img_{rng.getrandbits(24):06x}"
            emulator.executions[execution_id] = Execution(
                id=execution_id,
                name=AGENT,
                created_at=started,
                plan=["enqueued", "completed"],
                outcome="completed",
                request={"name": AGENT, "batch": True, "inputs": {"file": f"s3://{stack.input_bucket}/{key}"}},
                response={"summary": "scale document", "artifacts": {"preview": artifact}},
                usage={"credits_used": 1, "elements_processed": 1, "element_type": "page"},
            )
            emulator.artifacts[(execution_id, artifact)] = (b"\xff\xd8scale", "image/jpeg")
            job = Job(
                job_id=job_id,
                bucket=stack.input_bucket,
                key=key,
                version_id=version.version_id,
                etag=version.etag,
                size=10,
                content_type="application/pdf",
                route=route,
                status=Status.SUBMITTED,
                remote_status="enqueued",
                execution_id=execution_id,
                attempts=1,
                next_poll_at=started + settings.first_poll_seconds,
                deadline_at=started + settings.job_deadline_seconds,
                downtime_mark=0,
                created_at=started - 1,
                updated_at=started,
                submitted_at=started,
            )
            _put(table, job.to_item() | {"poll_shard": store.shard(job_id)})
        if settings.max_in_flight:
            _put(table, {"job_id": "#inflight", "used": files, "recounted_at": START})
    finally:
        table.stream_shard = stream
    return files


def _put(table: Any, item: dict[str, Any]) -> None:
    """One row straight into moto's table: its ``put_item`` re-sums the item's size for every attribute
    it adds (quadratic; 100k rows took minutes), and a seeded row needs none of its checks."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    from vlmwatch.adapters.dynamo import serialize_item

    attrs = serialize_item(item)
    row = Item(DynamoType(attrs["job_id"]), None, {})
    dict.update(row.attrs, {name: DynamoType(value) for name, value in attrs.items()})
    table.items[row.hash_key] = row


# -- one size -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One poller run: what it did, its wall time in-process, and the same run modelled for AWS."""

    at: int
    claimed: int
    polled: int
    wall: float
    modelled: float
    vlmrun_requests: int
    aws_calls: int
    pages: int = 0
    stopped: str = ""


@dataclass
class SizeResult:
    files: int
    rpm: int
    poller_max_jobs: int
    runs: list[Run]
    delivered: int
    failed: int
    virtual_seconds: int  # from the first file to the end of the simulation (or the last document)
    drain_seconds: float  # measured, or extrapolated (sampled)
    sampled: bool
    vlmrun: Counter[str]
    aws_calls: Counter[str]
    item_writes: Counter[tuple[str, int]]
    index_writes: Counter[tuple[str, int]]
    index_units: Counter[tuple[str, int]]
    durations: dict[str, list[float]]  # modelled seconds per invocation, by function
    wall_seconds: float
    documents: int = 0  # delivered in all (``delivered`` is the counted stretch's)
    job_seconds: int = 120

    @property
    def longest(self) -> Run:
        return max(self.runs, key=lambda r: r.modelled)

    @property
    def requests_per_doc(self) -> float:
        return sum(self.vlmrun.values()) / max(1, self.delivered)

    def hottest(self, writes: Counter[tuple[str, int]]) -> tuple[str, int, float]:
        """(key, peak writes in one virtual second, average writes a second over the busiest minute)."""
        per_second: dict[str, Counter[int]] = defaultdict(Counter)
        for (key, second), n in writes.items():
            per_second[key][second] += n
        best = ("-", 0, 0.0)
        for key, seconds in per_second.items():
            peak = max(seconds.values())
            minutes: Counter[int] = Counter()
            for second, n in seconds.items():
                minutes[second // 60] += n
            sustained = max(minutes.values()) / 60
            if (peak, sustained) > (best[1], best[2]):
                best = (key, peak, sustained)
        return best

    def cost(self) -> dict[str, float]:
        from vlmwatch_local.harness.perf import PRICES, ModeResult, cost_per_1000

        result = ModeResult(
            mode=f"scale-{self.files}",
            jobs=max(1, self.delivered),
            status_requests=0,
            all_requests=sum(self.vlmrun.values()),
            latencies=[],
            aws_calls=self.aws_calls,
            durations=self.durations,
            delivered=self.delivered,
            failed=self.failed,
        )
        cost = cost_per_1000(result)
        # perf prices one read unit per read call; a read of many rows (the slots' recount) costs its size.
        calls = sum(n for k, n in self.aws_calls.items() if k.split(":")[-1] in READS and k.startswith("dynamodb:"))
        extra = max(0.0, self.aws_calls[READ_UNITS] - calls) * PRICES["dynamodb_read_unit"]
        cost["DynamoDB"] += extra * 1000 / max(1, self.delivered)
        return cost

    @property
    def floor_seconds(self) -> float:
        """What the plan's rate alone allows: the requests the documents took, at ``rpm``."""
        return self.requests_per_doc * self.files / self.rpm * 60 if self.rpm else 0.0

    @property
    def slack_seconds(self) -> float:
        """What a drain takes beyond the rate floor in any case: the executions themselves, and the minute
        before the first poller run."""
        return self.job_seconds + 60

    @property
    def most_claimed(self) -> Run:
        return max(self.runs, key=lambda r: r.claimed)


def run_size(
    files: int,
    *,
    rpm: int = 600,
    job_seconds: int = 120,
    window: int | None = None,
    env: dict[str, str] | None = None,
    max_ticks: int = 100_000,
) -> SizeResult:
    """Seed ``files`` jobs in flight and run the poller every virtual minute (the stream a second after),
    until every document is written or, with ``window``, for that many poller runs."""
    from vlmwatch.core.settings import Settings
    from vlmwatch.runtime import wiring
    from vlmwatch_local.cloud.stack import LocalStack
    from vlmwatch_local.emulator import EmulatorConfig

    started_wall = time.monotonic()
    clock = Clock(START)
    functions_env = {
        "DEFAULT_AGENT_NAME": AGENT,
        "REQUESTS_PER_MINUTE": str(rpm),
        "MAX_IN_FLIGHT": str(files),
        **(env or {}),
        # One at a time: in-process moto does not make concurrent conditional updates atomic (DynamoDB does).
        # The modelled run divides its worker threads' calls by the concurrency asked for (default: 4).
        "POLLER_CONCURRENCY": "1",
    }
    concurrency = int((env or {}).get("POLLER_CONCURRENCY", TEMPLATE_CONCURRENCY))
    emulator_config = EmulatorConfig(step_seconds=job_seconds, status_sequence=["enqueued", "completed"])
    local = LocalStack(
        emulator_config=emulator_config, env=functions_env, moto="in-process", clock=clock, fetch=_no_fetch
    )
    with local:
        settings = Settings.from_env(local.function_env)
        # Before anything builds a client: botocore clients copy the session's handlers when they are made.
        meter = CallMeter(clock, concurrency, local.stack.table)
        meter.attach(wiring._session(), local.emulator)
        seed(local, files, job_seconds)
        import boto3

        description = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=local.stack.table)
        index_meter = IndexMeter.of_table(description["Table"])
        stream = StreamReader(local.stack, index_meter, meter.write_seconds)
        aws, emulator = local.aws, local.emulator
        runs: list[Run] = []
        durations: dict[str, list[float]] = defaultdict(list)
        ticks: list[Tick] = []
        for tick in range(1, max_ticks + 1):
            clock.advance(60 - clock() % 60)  # rate(1 minute)
            runs.append(_poller_run(aws, emulator, meter, durations))
            stream.read(int(clock()))
            clock.advance(1)  # the stream's batching window
            _pump(aws, meter, durations)
            stream.read(int(clock()))
            delivered = sum(r["status"] == "delivered" for r in aws.rows.values())
            ticks.append(Tick.now(int(clock()) - START, delivered, emulator, meter, durations))
            if delivered >= files or (window is not None and tick >= window):
                break
        rows = list(aws.rows.values())
    done = [r for r in rows if r["status"] == "delivered"]
    sampled = len(done) < files
    # A full run counts everything; a sampled one its second half, when the backlog is steady (the first
    # runs look at executions still running, a cost every drop pays once, whatever its size).
    first = ticks[len(ticks) // 2 - 1] if sampled and len(ticks) > 1 else Tick.zero()
    last = ticks[-1]
    return SizeResult(
        files=files,
        rpm=rpm,
        poller_max_jobs=settings.poller_max_jobs,
        runs=runs,
        delivered=last.delivered - first.delivered,
        failed=sum(r.get("outcome") in ("failed", "timed_out") for r in rows),
        virtual_seconds=last.second,
        drain_seconds=_drain_seconds(files, [(t.second, t.delivered) for t in ticks], done),
        sampled=sampled,
        vlmrun=last.vlmrun - first.vlmrun,
        aws_calls=last.calls - first.calls,
        item_writes=meter.item_writes,
        index_writes=index_meter.writes,
        index_units=index_meter.units,
        durations={k: v[first.durations.get(k, 0) :] for k, v in durations.items()},
        wall_seconds=time.monotonic() - started_wall,
        documents=len(done),
        job_seconds=job_seconds,
    )


@dataclass
class Tick:
    """The counters after one poller run and its stream pump (to count a steady stretch of a sampled run)."""

    second: int
    delivered: int
    vlmrun: Counter[str]
    calls: Counter[str]
    durations: dict[str, int]

    @classmethod
    def now(
        cls, second: int, delivered: int, emulator: Any, meter: CallMeter, durations: dict[str, list[float]]
    ) -> Tick:
        api = Counter({k: v for k, v in emulator.requests.items() if k.startswith(("GET /v1", "POST /v1"))})
        return cls(second, delivered, api, Counter(meter.calls), {k: len(v) for k, v in durations.items()})

    @classmethod
    def zero(cls) -> Tick:
        return cls(0, 0, Counter(), Counter(), {})


def _no_fetch(url: str) -> tuple[bytes, str | None]:
    return b"", None  # seeded executions never read their input


@dataclass
class ModelledContext(LambdaContext):
    """The poller's Lambda context, its remaining time counted in modelled AWS seconds (not this process's
    wall time, which moto's full-table index walks make minutes long at 100k)."""

    elapsed: Callable[[], float] = lambda: 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - self.elapsed()) * 1000))


def _poller_run(aws: Any, emulator: Any, meter: CallMeter, durations: dict[str, list[float]]) -> Run:
    before_requests = sum(emulator.requests.values())
    before_calls = sum(meter.calls.values())
    at = int(emulator.now())
    handler = aws.handlers["poller"]
    context = ModelledContext(
        function_name="vlmwatch-poller", timeout_seconds=POLLER_TIMEOUT, elapsed=meter.run_seconds
    )
    started = time.perf_counter()
    meter.run_from(at)
    try:
        summary = handler.lambda_handler(scheduled_event(aws.stack.region), context)
    finally:
        # With the GIL the worker threads' Python time is serial: the run's own time is its wall time less
        # the time spent inside moto and the emulator; the calls themselves count at AWS latency.
        model = meter.run_seconds()
        meter.run_from(None)
        handler.kit.metrics.clear_metrics()  # metrics are disabled: powertools would still buffer them
    wall = time.perf_counter() - started
    durations["poller"].append(model)
    return Run(
        at=at,
        claimed=int(summary.get("claimed", 0)),
        polled=int(summary.get("polled", 0)),
        wall=wall,
        modelled=model,
        vlmrun_requests=sum(emulator.requests.values()) - before_requests,
        aws_calls=sum(meter.calls.values()) - before_calls,
        pages=int(summary.get("pages", 0)),
        stopped=str(summary.get("stopped", "")),
    )


def _pump(aws: Any, meter: CallMeter, durations: dict[str, list[float]]) -> None:
    invocations = len(aws.invocations)
    in_calls, modelled = meter.mark()
    started = time.perf_counter()
    for _ in range(5):  # again until a pump delivers nothing: it reads the `delivered` records of the last
        if not aws.pump_stream():
            break
    wall = time.perf_counter() - started
    made = [i for i in aws.invocations[invocations:] if i.function == "complete"]
    if made:
        after_in, after_modelled = meter.mark()
        total = max(0.0, wall - (after_in - in_calls)) + (after_modelled - modelled)
        durations["complete"].extend([total / len(made)] * len(made))


def _drain_seconds(files: int, progress: list[tuple[int, int]], done: list[dict[str, Any]]) -> float:
    """First file -> last document; short of it, extrapolated at the rate of the window's second half."""
    if len(done) >= files:
        return max(float(r["delivered_at"]) for r in done) - START
    half = progress[len(progress) // 2]
    end = progress[-1]
    rate = (end[1] - half[1]) / max(1, end[0] - half[0])
    return end[0] + (files - end[1]) / rate if rate > 0 else math.inf


# -- the report -----------------------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def report(results: list[SizeResult], job_seconds: int) -> str:
    rpm = results[0].rpm
    lines = [
        f"Scale model: files in flight, `RequestsPerMinute={rpm}`, `POLLER_MAX_JOBS={results[0].poller_max_jobs}`"
        f" (a page), executions of {job_seconds} s, the poller every minute (virtual time; see"
        " `local/vlmwatch_local/harness/scale.py`).",
        "",
        "| files in flight | longest poller run: wall in-process / modelled AWS (s), jobs, pages | hottest item:"
        " peak / sustained writes/s | hottest index partition: peak writes/s (WCU/s) | VLM Run requests /"
        " 1,000 docs | AWS $ / 1,000 docs | drain at the plan's rate | rate floor (drain / floor) |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        run = r.longest
        item, peak, sustained = r.hottest(r.item_writes)
        index, index_peak, _ = r.hottest(r.index_writes)
        units = max((n for (k, _s), n in r.index_units.items() if k == index), default=0)
        drain = _minutes(r.drain_seconds) + (" (extrapolated)" if r.sampled else "")
        ratio = r.drain_seconds / r.floor_seconds if r.floor_seconds else math.inf
        lines.append(
            f"| {r.files:,} | {run.wall:.1f} / {run.modelled:.1f}, {run.claimed} jobs, {run.pages} pages |"
            f" `{_label(item)}` {peak} / {sustained:.1f} | `{index}` {index_peak} ({units}) |"
            f" {1000 * r.requests_per_doc:,.0f} | {sum(r.cost().values()):.4f} | {drain} |"
            f" {_minutes(r.floor_seconds)} (x{ratio:.2f}) |"
        )
    lines += ["", *_notes(results)]
    return "\n".join(lines)


def _label(key: str) -> str:
    return key if key.startswith("#") else f"job {key[:8]}…"


def _notes(results: list[SizeResult]) -> list[str]:
    notes = []
    for r in results:
        what = (
            f"{r.documents:,} of {r.files:,} documents in {_minutes(r.virtual_seconds)} of virtual time,"
            f" {len(r.runs)} poller runs, {r.wall_seconds:.0f} s of wall time"
        )
        if r.sampled:
            what += f"; sampled: drain extrapolated at the rate of the last {len(r.runs) - len(r.runs) // 2} runs"
        kinds = ", ".join(f"{k} {v / max(1, r.delivered):.2f}" for k, v in sorted(r.vlmrun.items()))
        stops = ", ".join(f"{why} {n}" for why, n in Counter(run.stopped for run in r.runs).most_common())
        most = r.most_claimed
        notes.append(
            f"- {r.files:,}: {what}. VLM Run requests per document: {kinds}. Poller runs: at most {most.claimed}"
            f" jobs in {most.pages} pages ({most.modelled:.1f} s modelled); ended by {stops}."
        )
    base = results[0]
    for r in results[1:]:
        ratio = sum(r.cost().values()) / max(1e-12, sum(base.cost().values()))
        req = r.requests_per_doc / max(1e-12, base.requests_per_doc)
        verdict = "within" if ratio <= 1.1 and req <= 1.1 else "NOT within"
        notes.append(
            f"- {r.files:,} vs {base.files:,}: AWS $ per document x{ratio:.2f}, VLM Run requests per document"
            f" x{req:.2f}: {verdict} 1.1x."
        )
    notes += _limits(results)
    return notes


def _limits(results: list[SizeResult]) -> list[str]:
    """Every limit a size crosses, with the numbers."""
    found = []
    for r in results:
        run = r.longest
        if run.modelled > TARGET_RUN_SECONDS:
            found.append(
                f"- LIMIT {r.files:,}: a poller run is modelled at {run.modelled:.0f} s for {run.claimed} jobs"
                f" (timeout {POLLER_TIMEOUT} s, target {TARGET_RUN_SECONDS} s)."
            )
        for label, writes in (("item", r.item_writes), ("index partition", r.index_units)):
            key, peak, sustained = r.hottest(writes)
            if peak > PARTITION_LIMIT or sustained > PARTITION_LIMIT:
                found.append(
                    f"- LIMIT {r.files:,}: {label} `{key}` takes {peak} writes in one virtual second"
                    f" ({sustained:.0f}/s over its busiest minute) against {PARTITION_LIMIT} WCU/s per partition."
                )
        if r.rpm and r.drain_seconds > 1.1 * r.floor_seconds + r.slack_seconds:
            found.append(
                f"- LIMIT {r.files:,}: the drain takes {_minutes(r.drain_seconds)}, slower than the plan's {r.rpm}"
                f" requests a minute allow ({_minutes(r.floor_seconds)} for the requests the documents took, plus"
                f" {r.slack_seconds:.0f} s for the executions and the first poll): the drain is the poller's."
            )
    return found or ["- No limit crossed at these sizes."]


def main(args: Any) -> int:
    """Every size, one after the other; the process's environment is as it was afterwards."""
    saved = dict(os.environ)
    package = logging.getLogger("vlmwatch")
    level = package.level
    package.setLevel(logging.ERROR)  # thousands of jobs' info lines are not the report
    os.environ.update(
        {
            "POWERTOOLS_METRICS_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        }
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    try:
        results = []
        for files in _sizes(args.sizes):
            window = None if files <= args.full_max else args.window
            print(f"scale: {files:,} files in flight" + (f", {window} poller runs" if window else ""), flush=True)
            env = dict(item.split("=", 1) for item in getattr(args, "env", None) or [])
            results.append(run_size(files, rpm=args.rpm, job_seconds=args.job_seconds, window=window, env=env))
        text = report(results, args.job_seconds)
        print()
        print(text)
        if getattr(args, "json", None):
            with open(args.json, "w") as out:
                json.dump([_summary(r) for r in results], out, indent=2)
    finally:
        package.setLevel(level)
        os.environ.clear()
        os.environ.update(saved)
    return 0 if all(r.failed == 0 for r in results) else 1


def _summary(r: SizeResult) -> dict[str, Any]:
    run = r.longest
    return {
        "files": r.files,
        "longest_run": {"wall": run.wall, "modelled": run.modelled, "jobs": run.claimed, "pages": run.pages},
        "hottest_item": r.hottest(r.item_writes),
        "hottest_index": r.hottest(r.index_writes),
        "requests_per_1000": 1000 * r.requests_per_doc,
        "usd_per_1000": sum(r.cost().values()),
        "drain_seconds": r.drain_seconds,
        "floor_seconds": r.floor_seconds,
        "sampled": r.sampled,
    }


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "").replace("k", "000")) for part in text.split(",") if part.strip()]


if __name__ == "__main__":  # pragma: no cover - the options live with the other commands
    import sys

    from vlmwatch_local.__main__ import main as cli

    raise SystemExit(cli(["scale", *sys.argv[1:]]))
