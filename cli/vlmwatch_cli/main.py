"""Operate a vlmwatch deployment: submit files and follow them, see jobs, retry, backfill, redrive.

The deployment is found by --stack NAME (its CloudFormation outputs) or by explicit names (--input-bucket,
--output-bucket, --table or VLMWATCH_* variables). AWS is reached through boto3's usual settings:
AWS_ENDPOINT_URL points every command at the local stack.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from vlmwatch.adapters.breaker import MANUAL
from vlmwatch.core.job import Job
from vlmwatch.core.lifecycle import RETRYABLE, SETTLED, Status
from vlmwatch_cli import ops
from vlmwatch_cli.target import Target, TargetError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
dlq_app = typer.Typer(help="See and redrive the ingest DLQ and the failed-deliveries queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console(highlight=False)

StackOpt = Annotated[str | None, typer.Option("--stack", envvar="VLMWATCH_STACK", help="CloudFormation stack name.")]
InputOpt = Annotated[str | None, typer.Option("--input-bucket", help="Input bucket (instead of --stack).")]
OutputOpt = Annotated[str | None, typer.Option("--output-bucket", help="Output bucket (instead of --stack).")]
TableOpt = Annotated[str | None, typer.Option("--table", help="Job table (instead of --stack).")]


@app.callback()
def deployment(
    ctx: typer.Context,
    stack: StackOpt = None,
    input_bucket: InputOpt = None,
    output_bucket: OutputOpt = None,
    table: TableOpt = None,
) -> None:
    """Which deployment: options before the command (vlmwatch --stack prod list), or VLMWATCH_* variables."""
    ctx.obj = {"stack": stack, "input_bucket": input_bucket, "output_bucket": output_bucket, "table": table}


@contextmanager
def _usage_errors() -> Iterator[None]:
    """What the operator asked cannot be done as asked (no such deployment, queue, status...): one line, exit 2."""
    try:
        yield
    except (TargetError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _target(ctx: typer.Context) -> Target:
    names = (ctx.find_root().obj or {}) if ctx else {}
    with _usage_errors():
        return Target.resolve(
            names.get("stack"),
            input_bucket=names.get("input_bucket"),
            output_bucket=names.get("output_bucket"),
            table=names.get("table"),
        )


def _when(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _outcome(job: Job) -> str:
    outcome = (job.outcome or job.status).value
    colour = {"completed": "green", "failed": "red", "timed_out": "red", "skipped": "yellow"}.get(outcome, "cyan")
    return f"[{colour}]{outcome}[/{colour}]"


def _document(job: Job) -> str | None:
    return job.result_uri or job.error_uri


def _read_document(target: Target, uri: str) -> dict[str, Any] | None:
    bucket, _, key = uri[5:].partition("/")
    try:
        body = target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)
    except Exception:
        return None


def _short(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_outcome(target: Target, job: Job) -> None:
    uri = _document(job)
    say = functools.partial(console.print, soft_wrap=True)  # URIs stay whole, copyable
    say(f"[bold]{job.key}[/bold]  {_outcome(job)}  job {job.job_id}")
    if job.status == Status.SKIPPED:
        say(f"  skipped: {job.skip_reason}")
        return
    if uri:
        say(f"  document: {uri}")
        document = _read_document(target, uri)
        if document and "response" in document:
            say(f"  response: {_short(document['response'], 300)}")
        elif document and "error" in document:
            say(f"  error: {_short(document['error'].get('message', document['error']))}")
    elif job.error:
        say(f"  error: {_short(job.error)}")


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Files to upload.")],
    prefix: Annotated[str, typer.Option(help="Key prefix in the input bucket (e.g. invoices/).")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Follow each job to its outcome.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait follows the jobs.")] = 3600,
) -> None:
    """Upload files to the input bucket; with --wait, follow each to its result or error document."""
    target = _target(ctx)
    submitted = ops.submit(target, files, prefix)
    for item in submitted:
        console.print(f"uploaded s3://{target.input_bucket}/{item.key}  job {item.job_id}")
    if not wait:
        return
    rows: dict[str, str] = {s.job_id: "waiting for the event" for s in submitted}
    started = time.monotonic()

    def render() -> Table:
        grid = Table(show_header=True, header_style="bold")
        grid.add_column("file")
        grid.add_column("status")
        grid.add_column("elapsed", justify="right")
        for item in submitted:
            grid.add_row(item.key, rows[item.job_id], f"{time.monotonic() - started:.0f} s")
        return grid

    with Live(render(), console=console, refresh_per_second=4, transient=True) as live:

        def changed(job: Job) -> None:
            rows[job.job_id] = job.status.value if job.status != Status.DELIVERED else _outcome(job)
            live.update(render())

        final = ops.wait(target, [s.job_id for s in submitted], timeout=timeout, on_change=changed)
    unsettled = 0
    for item in submitted:
        job = final[item.job_id]
        if job is None or job.status not in SETTLED:
            unsettled += 1
            state = job.status.value if job else "no job yet"
            console.print(f"[yellow]{item.key}[/yellow]: still {state} after {timeout:.0f} s (it goes on)")
        else:
            _show_outcome(target, job)
    failed = sum(1 for j in final.values() if j is not None and (j.outcome or j.status) in RETRYABLE)
    raise typer.Exit(1 if unsettled or failed else 0)


@app.command()
def status(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="A job id, or an input key (its current version's job).")],
    as_json: Annotated[bool, typer.Option("--json", help="The job row as JSON.")] = False,
) -> None:
    """One job: where it is, what ran, and its document or the reason it has none."""
    target = _target(ctx)
    job = ops.find_job(target, ref)
    if job is None:
        console.print(f"[red]no job for {ref!r}[/red] (not a job id, and no job for that key)")
        raise typer.Exit(1)
    if as_json:
        print(job.model_dump_json(exclude_none=True, indent=2))
        return
    _show_outcome(target, job)
    route = job.route
    console.print(f"  source: s3://{job.bucket}/{job.key} (version {job.version_id or '-'})")
    if route:
        console.print(f"  ran: {route.agent or 'inline prompt'} (rule {route.rule}, model {route.model})")
    console.print(f"  execution: {job.execution_id or '-'}  status at VLM Run: {job.remote_status or '-'}")
    console.print(f"  received {_when(job.created_at)}  finished {_when(job.finished_at)}  polls {job.poll_count}")
    if job.previous_execution_ids:
        console.print(f"  retried {job.retries}x; earlier executions: {', '.join(job.previous_execution_ids)}")
    if job.orphan_execution_ids:
        console.print(f"  extra executions on record: {', '.join(job.orphan_execution_ids)}")


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
        raise typer.BadParameter("use 30m, 2h, 3d or an ISO date/time") from exc
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


@app.command("list")
def list_(
    ctx: typer.Context,
    status_: Annotated[
        str | None, typer.Option("--status", help="Comma-separated statuses (failed also lists delivered failures).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only jobs received since: 30m, 2h, 3d or an ISO time.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job, one per line.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many rows (newest first).")] = 200,
) -> None:
    """Jobs, newest first."""
    target = _target(ctx)
    jobs = ops.list_jobs(target, (status_ or "").split(","), _since(since))[:limit]
    if as_json:
        for job in jobs:
            print(job.model_dump_json(exclude_none=True, exclude={"execution_snapshot"}))
        return
    grid = Table(show_header=True, header_style="bold")
    for column in ("job id", "key", "status", "received", "document or reason"):
        grid.add_column(column, overflow="fold")
    for job in jobs:
        why = _document(job) or job.skip_reason or job.error or ""
        grid.add_row(job.job_id[:12], job.key, _outcome(job), _when(job.created_at), _short(why, 120))
    console.print(grid)
    console.print(f"{len(jobs)} job(s)")


@app.command()
def retry(
    ctx: typer.Context,
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to retry.")] = None,
    status_: Annotated[str | None, typer.Option("--status", help="Retry every job with these outcomes.")] = None,
) -> None:
    """Reprocess failed or timed-out jobs without a re-upload (never one in flight)."""
    if not job_ids and not status_:
        raise typer.BadParameter("give job ids, or --status failed,timed_out")
    target = _target(ctx)
    with _usage_errors():
        results = ops.retry(target, job_ids or [], [s for s in (status_ or "").split(",") if s])
    for result in results:
        mark = "[green]retried[/green]" if result.done else "[yellow]skipped[/yellow]"
        console.print(f"{mark} {result.job_id}: {result.reason}")
    console.print(f"{sum(r.done for r in results)} of {len(results)} job(s) reopened")


@app.command()
def backfill(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="s3://input-bucket/prefix of existing objects to process.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be enqueued, enqueue nothing.")] = False,
    rate: Annotated[float, typer.Option(help="Most messages per second (0 = no cap).")] = 0.0,
    ingest_queue_url: Annotated[str | None, typer.Option(help="Ingest queue URL (instead of --stack).")] = None,
    service_tier: Annotated[
        str | None, typer.Option("--service-tier", help="VLM Run tier for these files: flex costs half the credits.")
    ] = None,
) -> None:
    """Process objects already in the bucket (safe to run twice: one job per object version)."""
    target = _target(ctx)
    if ingest_queue_url:
        target.ingest_queue_url = ingest_queue_url
    with _usage_errors():
        report = ops.backfill(target, uri, dry_run=dry_run, rate=rate, service_tier=service_tier)
    if dry_run:
        for key in report.keys:
            console.print(f"would enqueue {key}")
    console.print(
        f"{report.listed} object(s) listed: {report.enqueued} enqueued, {report.known} already have a job, "
        f"{report.ignored} folder marker(s) ignored" + (" (dry run)" if dry_run else "")
    )


QueueArg = Annotated[str, typer.Option("--queue", help="ingest (the ingest DLQ) or deliveries (failed deliveries).")]


def _describe(body: str) -> str:
    """An S3 event as the object it names; anything else as its first characters."""
    try:
        event = json.loads(body)
        obj, bucket = event["detail"]["object"], event["detail"]["bucket"]["name"]
        return f"{event.get('detail-type', 'event')}: s3://{bucket}/{obj['key']} (version {obj.get('version-id', '-')})"
    except (ValueError, KeyError, TypeError):
        return _short(body, 160)


@dlq_app.command("list")
def dlq_list(ctx: typer.Context, queue: QueueArg = "ingest") -> None:
    """Show what waits in a dead-letter queue (read without removing)."""
    target = _target(ctx)
    with _usage_errors():
        messages = ops.dlq_messages(target, queue)
    grid = Table(show_header=True, header_style="bold")
    for column in ("message id", "sent", "receives", "body"):
        grid.add_column(column, overflow="fold")
    for message in messages:
        attrs = message.get("Attributes", {})
        sent = int(attrs.get("SentTimestamp", "0")) // 1000
        receives = attrs.get("ApproximateReceiveCount", "?")
        grid.add_row(message["MessageId"], _when(sent), receives, _describe(message["Body"]))
    console.print(grid)
    console.print(f"{len(messages)} message(s) in the {queue} dead-letter queue")


@dlq_app.command("redrive")
def dlq_redrive(ctx: typer.Context, queue: QueueArg = "ingest") -> None:
    """Send dead letters back to work (ingest: to the ingest queue; deliveries: jobs made due for delivery)."""
    target = _target(ctx)
    with _usage_errors():
        moved = ops.redrive(target, queue)
    console.print(f"{moved} message(s) redriven from the {queue} dead-letter queue")


def _show_service(report: ops.ServiceReport) -> None:
    colour = {"closed": "green", "ramping": "yellow"}.get(report.state, "red")
    console.print(f"VLM Run circuit breaker: [{colour}]{report.state}[/{colour}]")
    if report.reason:
        console.print(f"  reason:       {report.reason}")
        console.print(f"  since:        {_when(report.since)}")
        if report.reason in MANUAL:
            console.print("  until:        `vlmwatch resume` (or, for the budget, a new month or a higher budget)")
        else:
            console.print(f"  next probe:   {_when(report.next_probe_at)}")
        if report.message:
            console.print(f"  why:          {_short(report.message, 300)}")
    console.print(f"  probes sent:  {report.probes}   times opened: {report.opened}")
    console.print(f"  time open:    {report.downtime_seconds} s in all (deadlines of jobs in flight move by it)")
    waiting = ", ".join(f"{n} {status}" for status, n in sorted(report.waiting.items())) or "none"
    console.print(f"  jobs waiting: {sum(report.waiting.values())} ({waiting})")


@app.command()
def usage(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back: 30d, 12h, 90m.")] = "30d",
    by: Annotated[str, typer.Option(help="Group by rule, agent or prefix (the key's first folder).")] = "rule",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """What the work cost: VLM Run credits, elements, files and failures per rule, agent or prefix."""
    target = _target(ctx)
    with _usage_errors():
        rows = ops.usage(target, since=_since(since), by=by)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.__dict__))
        return
    table = Table(title=f"VLM Run usage, last {since}, by {by}")
    for column in (by, "files", "credits", "elements", "failed"):
        table.add_column(column, justify="left" if column == by else "right")
    for row in rows:
        table.add_row(row.group, str(row.files), f"{row.credits:g}", str(row.elements), str(row.failures))
    table.add_row(
        "total",
        *(
            f"{v:g}" if isinstance(v, float) else str(v)
            for v in (
                sum(r.files for r in rows),
                sum(r.credits for r in rows),
                sum(r.elements for r in rows),
                sum(r.failures for r in rows),
            )
        ),
        style="bold",
    )
    console.print(table)


@app.command()
def service(ctx: typer.Context) -> None:
    """Is VLM Run taking work? The account's circuit breaker: state, reason, since when, probes, jobs waiting."""
    target = _target(ctx)
    _show_service(ops.service(target))


@app.command()
def pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Shown by `vlmwatch service`.")] = "paused by an operator",
) -> None:
    """Stop sending work to VLM Run (e.g. before a plan change). Files keep arriving and wait on their rows."""
    target = _target(ctx)
    _show_service(ops.pause(target, reason))


@app.command()
def resume(ctx: typer.Context) -> None:
    """Send work to VLM Run again (closes the breaker whatever opened it); intake ramps back up."""
    target = _target(ctx)
    _show_service(ops.resume(target))


def main() -> None:  # pragma: no cover - the console script
    app()
