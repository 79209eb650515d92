"""Operate a vlmwatch deployment: submit files and follow them, see jobs, retry, cancel, backfill, redrive.

The deployment is named by one variable, VLMWATCH_STACK (or --stack): a CloudFormation stack name, or the
env file `make up` writes for the local stack. A job is named the same way everywhere: a job id or a
unique prefix of it (4+ characters, as `list` shows), an input key or s3://bucket/key URI (either with an
optional ?versionId=V), or a VLM Run execution id.

Exit status: 0 all done as asked; 1 some of the work failed (a job not retried, a file not uploaded, a
--wait that timed out or ended in failure); 2 nothing could be done as asked (bad input, unknown
deployment, AWS or VLM Run refused: one line says what to check; --debug shows the traceback).
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from vlmwatch.adapters.breaker import MANUAL
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import RETRYABLE, SETTLED, Status
from vlmwatch_cli import deadletters, jobs, ops, results_cmds, upload
from vlmwatch_cli.errors import EXIT_NOTHING, EXIT_PARTIAL, Group, describe, reaching
from vlmwatch_cli.refs import SHORT_ID, Resolver
from vlmwatch_cli.show import clean, console, emit_json, say, text, warn, warn_note
from vlmwatch_cli.target import Target

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, cls=Group, rich_markup_mode=None)
dlq_app = typer.Typer(
    help="See, redrive or drop what waits in the ingest DLQ and the failed-deliveries queue.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dlq_app, name="dlq")

CONFIRM_ABOVE = 10  # bulk verbs ask before touching more than this many items (--yes: do not ask)

StackOpt = Annotated[
    str | None,
    typer.Option("--stack", envvar="VLMWATCH_STACK", help="Stack name, or the env file `make up` wrote."),
]
NameOpt = Annotated[str | None, typer.Option(help="Overrides the stack's name for this resource.")]
SinceOpt = Annotated[str | None, typer.Option(help="Only what changed since: 30m, 2h, 3d or an ISO time.")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="At most this many (newest first).")]
# Dead letters are taken oldest first (deadletters.Batch.read sorts by SentTimestamp; undelivered jobs by
# updated_at): the ones waiting longest go back to work first, the rest stay where they are.
OldestLimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most this many (oldest first; the rest stay parked).")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help=f"Do not ask before touching more than {CONFIRM_ABOVE}.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")]
QueueOpt = Annotated[str, typer.Option("--queue", help="ingest (the ingest DLQ) or deliveries (failed deliveries).")]


@app.callback()
def deployment(
    ctx: typer.Context,
    stack: StackOpt = None,
    input_bucket: NameOpt = None,
    output_bucket: NameOpt = None,
    table: NameOpt = None,
    ingest_queue_url: NameOpt = None,
    dlq_url: NameOpt = None,
    failed_deliveries_url: NameOpt = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="VLMWATCH_DEBUG", help="Show tracebacks instead of one line.")
    ] = False,
) -> None:
    """Which deployment: options before the command (vlmwatch --stack prod list), or VLMWATCH_STACK."""
    ctx.obj = {
        "debug": debug,
        "stack": stack,
        "names": {
            "input_bucket": input_bucket,
            "output_bucket": output_bucket,
            "table": table,
            "ingest_queue_url": ingest_queue_url,
            "dlq_url": dlq_url,
            "failed_deliveries_url": failed_deliveries_url,
        },
    }


def _target(ctx: typer.Context, *needs: str) -> Target:
    obj = ctx.find_root().obj or {}
    target = Target.resolve(obj.get("stack"), **obj.get("names", {}))
    reaching.set(target.session_settings)
    return target.need(*needs)


def _when(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _outcome(job: Job) -> Text:
    outcome = (job.outcome or job.status).value
    colour = {"completed": "green", "failed": "red", "timed_out": "red", "skipped": "yellow"}.get(outcome, "cyan")
    return text(outcome, colour)


def _short(value: Any, limit: int = 400) -> str:
    import json

    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return raw if len(raw) <= limit else raw[: limit - 3] + "..."


def _since(value: str | None) -> int | None:
    """``2h``, ``30m``, ``3d`` ago, or an ISO date/time."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return int(time.time()) - int(value[:-1]) * units[value[-1]]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("use 30m, 2h, 3d or an ISO date/time", param_hint="--since") from exc
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def _read_document(target: Target, uri: str) -> dict[str, Any] | None:
    import json

    bucket, _, key = uri[5:].partition("/")
    try:
        document = json.loads(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if describe(exc) is None and not isinstance(exc, ValueError):
            raise
        return None  # the row says enough; the document is a bonus
    return document if isinstance(document, dict) else None


def _show_outcome(target: Target, job: Job) -> None:
    uri = job.result_uri or job.error_uri
    say(text(job.key, "bold"), "  ", _outcome(job), f"  job {job.job_id}", soft_wrap=True)
    if job.status == Status.SKIPPED:
        say(f"  skipped: {job.skip_reason}", soft_wrap=True)
        return
    if uri:
        say(f"  document: {uri}", soft_wrap=True)  # whole, copyable
        document = _read_document(target, uri)
        if document and "response" in document:
            say(f"  response: {_short(document['response'], 300)}", soft_wrap=True)
        elif document and isinstance(document.get("error"), dict):
            say(f"  error: {_short(document['error'].get('message', document['error']))}", soft_wrap=True)
    elif job.error:
        say(f"  error: {_short(job.error)}", soft_wrap=True)


def _confirm(count: int, what: str, yes: bool) -> None:
    """Ask before a bulk verb touches more than CONFIRM_ABOVE items; declined (or no terminal): exit 2."""
    if yes or count <= CONFIRM_ABOVE:
        return
    if not typer.confirm(f"{what}: {count} items. Go ahead?", default=False):
        say("nothing done (add --yes to skip this question)")
        raise typer.Exit(EXIT_NOTHING)


# -- submit -----------------------------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (folders: every file, paths kept).")],
    prefix: Annotated[str, typer.Option(help="Key prefix in the input bucket, e.g. invoices (one / added).")] = "",
    agent: Annotated[str | None, typer.Option(help="Agent for these files (metadata vlmrun-agent).")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="K=V object metadata (repeat for more).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow each job to its outcome.")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds --wait follows the jobs.")] = 3600,
) -> None:
    """Upload files (streamed, multipart) to the input bucket; with --wait, follow each to its document."""
    planned = upload.plan(paths, prefix)  # every key decided, collisions refused, before any upload
    meta = upload.object_metadata(agent, metadata or [])
    target = _target(ctx, "input_bucket")
    s3 = target.client("s3")
    submitted: list[upload.Submitted] = []
    failed = 0
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        for item in planned:
            task = bar.add_task(clean(item.key), total=item.size)
            try:
                done = upload.upload(s3, target.input_bucket, item, meta, progress=functools.partial(bar.advance, task))
            except Exception as exc:
                message = describe(exc)
                if message is None or (ctx.find_root().obj or {}).get("debug"):
                    raise
                warn(f"{item.path}: not uploaded: {message}")
                failed += 1
                continue
            finally:
                bar.remove_task(task)
            submitted.append(done)
            say(f"uploaded s3://{target.input_bucket}/{done.key}  job {done.job_id[:SHORT_ID]}", soft_wrap=True)
    if not submitted:
        raise typer.Exit(EXIT_NOTHING)
    if wait:
        failed += _follow(target.need("table"), submitted, timeout)
    raise typer.Exit(EXIT_PARTIAL if failed else 0)


def _follow(target: Target, submitted: list[upload.Submitted], timeout: float) -> int:
    """Follow jobs to their outcome; returns how many did not succeed in time."""
    rows: dict[str, Text] = {s.job_id: text("waiting for the event") for s in submitted}
    started = time.monotonic()

    def render() -> Table:
        grid = Table(show_header=True, header_style="bold")
        for column in ("file", "status", "elapsed"):
            grid.add_column(column, justify="right" if column == "elapsed" else "left")
        for item in submitted:
            grid.add_row(text(item.key), rows[item.job_id], f"{time.monotonic() - started:.0f} s")
        return grid

    with Live(render(), console=console, refresh_per_second=4, transient=True) as live:

        def changed(job: Job) -> None:
            rows[job.job_id] = text(job.status.value) if job.status != Status.DELIVERED else _outcome(job)
            live.update(render())

        final = ops.wait(target, [s.job_id for s in submitted], timeout=timeout, on_change=changed)
    unsettled = 0
    for item in submitted:
        job = final[item.job_id]
        if job is None or job.status not in SETTLED:
            unsettled += 1
            state = job.status.value if job else "no job yet"
            say((item.key, "yellow"), f": still {state} after {timeout:.0f} s (it goes on)", soft_wrap=True)
        else:
            _show_outcome(target, job)
    failed = sum(1 for j in final.values() if j is not None and (j.outcome or j.status) in RETRYABLE)
    return unsettled + failed


# -- one job, many jobs -----------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="JOB", help="A job: id or prefix, key or s3:// URI, or execution id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The job row as JSON.")] = False,
) -> None:
    """One job: where it is, what ran, and its document or the reason it has none."""
    target = _target(ctx, "table")
    job = Resolver(target.queries, target.input_bucket).find(ref)
    if job is None:
        warn(f"no job for {ref!r} (not a job id or prefix, key, s3:// URI or execution id)")
        raise typer.Exit(EXIT_PARTIAL)
    if as_json:
        emit_json(job.model_dump_json(exclude_none=True, indent=2))
        return
    _show_outcome(target, job)
    route = job.route
    say(f"  source: s3://{job.bucket}/{job.key} (version {job.version_id or '-'})", soft_wrap=True)
    if route:
        say(f"  ran: {route.agent or 'inline prompt'} (rule {route.rule}, model {route.model})")
    say(f"  status: {job.status.value}  execution: {job.execution_id or '-'}  at VLM Run: {job.remote_status or '-'}")
    say(f"  received {_when(job.created_at)}  finished {_when(job.finished_at)}  polls {job.poll_count}")
    if job.previous_execution_ids:
        say(f"  retried {job.retries}x; earlier executions: {', '.join(job.previous_execution_ids)}")
    if job.orphan_execution_ids:
        say(f"  extra executions on record: {', '.join(job.orphan_execution_ids)}")


@app.command("list")
def list_(
    ctx: typer.Context,
    status_: Annotated[
        str | None,
        typer.Option("--status", help="Comma-separated statuses; an outcome (failed) also lists delivered ones."),
    ] = None,
    since: SinceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job, one per line.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows (most recently changed first).")] = 200,
) -> None:
    """Jobs, most recently changed first (index queries: --limit bounds what is read)."""
    wanted = jobs.parse_statuses(status_)
    target = _target(ctx, "table")
    notes: list[str] = []
    found = jobs.list_jobs(target.queries, wanted, since=_since(since), limit=limit, notes=notes)
    for note in notes:
        warn_note(note)
    if as_json:
        for job in found:
            emit_json(job.model_dump_json(exclude_none=True, exclude={"execution_snapshot"}))
        return
    grid = Table(show_header=True, header_style="bold")
    for column in ("job id", "key", "status", "changed", "document or reason"):
        grid.add_column(column, overflow="fold")
    for job in found:
        why = job.result_uri or job.error_uri or job.skip_reason or job.error or ""
        grid.add_row(job.job_id[:SHORT_ID], text(job.key), _outcome(job), _when(job.updated_at), text(_short(why, 120)))
    console.print(grid)
    say(f"{len(found)} job(s)")


@app.command()
def retry(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None, typer.Argument(metavar="[JOB]...", help="Jobs to retry (id or prefix, key, URI, execution).")
    ] = None,
    status_: Annotated[str | None, typer.Option("--status", help="Retry jobs with these outcomes.")] = None,
    since: SinceOpt = None,
    limit: LimitOpt = None,
    include_permanent: Annotated[
        bool, typer.Option("--include-permanent", help="With --status: also rejected inputs (4xx, too large).")
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
) -> None:
    """Reprocess failed or timed-out jobs without a re-upload (never one in flight or one that succeeded)."""
    if not refs and not status_:
        raise typer.BadParameter("give jobs, or --status failed,timed_out", param_hint="JOBS")
    wanted = jobs.parse_statuses(status_)
    target = _target(ctx, "table")
    notes: list[str] = []
    plan = jobs.retry_plan(
        target, refs or [], wanted, since=_since(since), limit=limit, include_permanent=include_permanent, notes=notes
    )
    for note in notes:
        warn_note(note)
    chosen = [i for i in plan if i.action == "retry"]
    if dry_run:
        for item in plan:
            mark = ("would retry", "green") if item.action == "retry" else ("would skip", "yellow")
            say(mark, f" {_name(item.ref, item.job)}: {item.reason}", soft_wrap=True)
        say(f"{len(chosen)} of {len(plan)} job(s) would be reopened (dry run)")
        raise typer.Exit(EXIT_PARTIAL if any(i.action == "skip" for i in plan) else 0)
    _confirm(len(chosen), "retry would reopen jobs", yes)
    results = jobs.retry_apply(target.store, plan)
    for item, result in zip(plan, results, strict=True):
        mark = ("retried", "green") if result.done else ("skipped", "yellow")
        say(mark, f" {_name(item.ref, item.job)}: {result.reason}", soft_wrap=True)
    say(f"{sum(r.done for r in results)} of {len(results)} job(s) reopened")
    failed = [i for i, r in zip(plan, results, strict=True) if not r.done and i.action != "leave"]
    raise typer.Exit(EXIT_PARTIAL if failed else 0)


def _name(ref: str, job: Job | None) -> str:
    return f"{job.job_id[:SHORT_ID]} {job.key}" if job is not None else repr(ref)


@app.command()
def cancel(
    ctx: typer.Context,
    refs: Annotated[
        list[str], typer.Argument(metavar="JOB...", help="Jobs to cancel (id or prefix, key, URI, execution).")
    ],
    reason: Annotated[str | None, typer.Option(help="Why; kept on the row and the error document.")] = None,
) -> None:
    """Stop waiting for jobs: each is marked failed, "cancelled by operator" (VLM Run has no execution
    cancel, so an execution already started is left to run; its result is not delivered)."""
    target = _target(ctx, "table")
    resolver = Resolver(target.queries, target.input_bucket)
    failed = 0
    for ref in refs:
        job = resolver.find(ref)
        if job is None:
            say(("not cancelled", "yellow"), f" {ref!r}: no such job")
            failed += 1
            continue
        result = jobs.cancel(target.store, job, reason)
        failed += not result.done
        mark = ("cancelled", "green") if result.done else ("not cancelled", "yellow")
        say(mark, f" {_name(ref, job)}: {result.reason}", soft_wrap=True)
    raise typer.Exit(EXIT_PARTIAL if failed else 0)


# -- existing objects and dead letters ----------------------------------------------------------------


@app.command()
def backfill(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="s3://input-bucket/prefix of existing objects to process.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be enqueued, enqueue nothing.")] = False,
    rate: Annotated[float, typer.Option(min=0, help="Most messages per second (0 = no cap).")] = 0.0,
    service_tier: Annotated[
        str | None, typer.Option("--service-tier", help="VLM Run tier for these files: flex costs half the credits.")
    ] = None,
) -> None:
    """Process objects already in the bucket (safe to run twice: one job per object version)."""
    target = _target(ctx, "input_bucket", "table")
    report = ops.backfill(target, uri, dry_run=dry_run, rate=rate, service_tier=service_tier)
    if dry_run:
        for key in report.keys:
            say(f"would enqueue {key}", soft_wrap=True)
    say(
        f"{report.listed} object(s) listed: {report.enqueued} enqueued, {report.known} already processed"
        + (f" ({report.documented} by their documents: row expired)" if report.documented else "")
        + f", {report.ignored} folder marker(s) ignored"
        + (" (dry run)" if dry_run else "")
    )


def _describe_message(body: str) -> str:
    """An S3 event as the object it names; anything else as its first characters."""
    import json

    try:
        event = json.loads(body)
        obj, bucket = event["detail"]["object"], event["detail"]["bucket"]["name"]
        return f"{event.get('detail-type', 'event')}: s3://{bucket}/{obj['key']} (version {obj.get('version-id', '-')})"
    except (ValueError, KeyError, TypeError):
        return _short(body, 160)


@dlq_app.command("list")
def dlq_list(ctx: typer.Context, queue: QueueOpt = "ingest") -> None:
    """Show what waits in a dead-letter queue (read without removing)."""
    target = _target(ctx)
    batch = deadletters.Batch.read(target, queue)
    batch.release()
    grid = Table(show_header=True, header_style="bold")
    for column in ("message id", "sent", "receives", "body"):
        grid.add_column(column, overflow="fold")
    for message in batch.messages:
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        sent = _when(deadletters.sent_at(message))
        grid.add_row(text(message["MessageId"]), sent, text(receives), text(_describe_message(message["Body"])))
    console.print(grid)
    say(f"{len(batch.messages)} message(s) in the {queue} dead-letter queue")


@dlq_app.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    queue: QueueOpt = "ingest",
    since: SinceOpt = None,
    limit: OldestLimitOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
) -> None:
    """Send dead letters back to work (ingest: to the ingest queue; deliveries: jobs made due for delivery)."""
    target = _target(ctx)
    plan = deadletters.redrive_plan(target, queue, since=_since(since), limit=limit)
    if dry_run or plan.size > CONFIRM_ABOVE:
        for message in plan.batch.messages:
            say(f"message {message['MessageId']}: {_describe_message(message['Body'])}", soft_wrap=True)
        for job in plan.jobs:
            say(f"job {job.job_id[:SHORT_ID]} {job.key}: {job.status.value}, undelivered", soft_wrap=True)
    if dry_run:
        plan.batch.release()
        say(f"{len(plan.batch.messages)} message(s), {len(plan.jobs)} job(s) would be redriven (dry run)")
        return
    try:
        _confirm(plan.size, f"redrive from the {queue} dead-letter queue", yes)
    except BaseException:
        plan.batch.release()
        raise
    moved = deadletters.redrive_apply(target, queue, plan)
    extra = f", {len(plan.jobs)} undelivered job(s) made due" if queue == "deliveries" else ""
    say(f"{moved} message(s) redriven from the {queue} dead-letter queue{extra}")


@dlq_app.command("drop")
def dlq_drop(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="The message id (or a unique prefix), as `dlq list` shows.")],
    queue: QueueOpt = "ingest",
) -> None:
    """Delete one dead letter for good (a message no redrive will ever fix)."""
    target = _target(ctx)
    dropped = deadletters.drop(target, queue, message_id)
    if dropped is None:
        warn(f"no message {message_id!r} in the {queue} dead-letter queue (or another reader holds it: try again)")
        raise typer.Exit(EXIT_PARTIAL)
    say(f"dropped {dropped['MessageId']}: {_describe_message(dropped['Body'])}", soft_wrap=True)


# -- the account ------------------------------------------------------------------------------------


def _show_service(report: ops.ServiceReport) -> None:
    colour = {"closed": "green", "ramping": "yellow"}.get(report.state, "red")
    say("VLM Run circuit breaker: ", (report.state, colour))
    if report.reason:
        say(f"  reason:       {report.reason}")
        say(f"  since:        {_when(report.since)}")
        if report.reason in MANUAL:
            say("  until:        `vlmwatch resume` (or, for the budget, a new month or a higher budget)")
        else:
            say(f"  next probe:   {_when(report.next_probe_at)}")
        if report.message:
            say(f"  why:          {_short(report.message, 300)}", soft_wrap=True)
    probes = f"{report.episode_probes} since it opened, {report.probes} in all"
    say(f"  probes sent:  {probes}   times opened: {report.opened}")
    if report.ramp_until:
        say(f"  ramping until: {_when(report.ramp_until)} (a growing share of work goes through)")
    say(f"  time open:    {report.downtime_seconds} s in all (deadlines of jobs in flight move by it)")
    waiting = ", ".join(f"{n} {status}" for status, n in sorted(report.waiting.items())) or "none"
    say(f"  jobs waiting: {sum(report.waiting.values())} ({waiting})")


@app.command()
def usage(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back: 30d, 12h, 90m.")] = "30d",
    by: Annotated[str, typer.Option(help="Group by rule, agent or prefix (the key's first folder).")] = "rule",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """What the work cost: VLM Run credits, elements, files and failures per rule, agent or prefix."""
    import json

    target = _target(ctx, "table")
    rows = ops.usage(target, since=_since(since), by=by)
    if as_json:
        for row in rows:
            emit_json(json.dumps(row.__dict__, ensure_ascii=False))
        return
    table = Table(title=text(f"VLM Run usage, last {since}, by {by}"))
    for column in (by, "files", "credits", "elements", "failed"):
        table.add_column(column, justify="left" if column == by else "right")
    for row in rows:
        table.add_row(text(row.group), str(row.files), f"{row.credits:g}", str(row.elements), str(row.failures))
    totals = (sum(r.files for r in rows), sum(r.credits for r in rows), sum(r.elements for r in rows))
    failures = sum(r.failures for r in rows)
    table.add_row("total", str(totals[0]), f"{totals[1]:g}", str(totals[2]), str(failures), style="bold")
    console.print(table)


@app.command()
def service(ctx: typer.Context) -> None:
    """Is VLM Run taking work? The account's circuit breaker: state, reason, since when, probes, jobs waiting."""
    _show_service(ops.service(_target(ctx, "table")))


@app.command()
def pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Shown by `vlmwatch service`.")] = "paused by an operator",
) -> None:
    """Stop sending work to VLM Run (e.g. before a plan change). Files keep arriving and wait on their rows."""
    _show_service(ops.pause(_target(ctx, "table"), reason))


@app.command()
def resume(ctx: typer.Context) -> None:
    """Send work to VLM Run again (closes the breaker whatever opened it); intake ramps back up."""
    _show_service(ops.resume(_target(ctx, "table")))


results_cmds.register(app, _target)


def main() -> None:  # pragma: no cover - the console script
    app()


__all__ = ["app", "main"]
