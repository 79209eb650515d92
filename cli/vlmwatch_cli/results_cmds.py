"""The commands about what ran and what came out: `config`, `history`, `get` and `query`.

Registered on the main app by :func:`register` (``main`` owns the deployment options and the error path).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vlmwatch.adapters.config_store import ConfigStore
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.job import Job
from vlmwatch_cli import configs, jobs
from vlmwatch_cli.errors import EXIT_PARTIAL, UsageError
from vlmwatch_cli.refs import Resolver, parse_object
from vlmwatch_cli.results_query import default_cache, rows_as_json, run_query, sync_index
from vlmwatch_cli.show import clean, console, emit_json, say, text, warn
from vlmwatch_cli.target import Target

TargetOf = Callable[..., Target]
config_app = typer.Typer(
    help="Configuration versions: rules, prompts and schemas pushed as data (no redeploy).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _when(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _store(target: Target) -> ConfigStore:
    return ConfigStore(target.client("dynamodb"), target.table)


def register(app: typer.Typer, target_of: TargetOf) -> None:
    """Add these commands to ``app``; ``target_of(ctx, *names)`` resolves the deployment."""
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def config_show(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="The configuration document only.")] = False,
    ) -> None:
        """The configuration version in effect (v0: none pushed, the template parameters rule)."""
        current = _store(target_of(ctx, "table")).current()
        if current is None:
            if as_json:
                emit_json("null")
                return
            say("v0: no configuration pushed; the deployment's parameters (RoutingRules, AgentName, Prompt) rule")
            return
        document = json.loads(current.config.canonical())
        if as_json:
            emit_json(json.dumps(document, indent=2))
            return
        say(text(current.label, "bold"), f"  pushed {_when(current.pushed_at)}  digest {current.config.digest}")
        if current.note:
            say(f"  note: {current.note}")
        rules = current.config.rules.root
        say(f"  {len(rules)} rule(s): {', '.join(r.name for r in rules) or '-'}")
        default = current.config.default
        say(f"  default: {default.agent or 'inline prompt' if default else 'none (unmatched files are skipped)'}")

    @config_app.command("push")
    def config_push(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(metavar="FILE", help="The configuration (JSON).")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and compare; write nothing.")] = False,
        note: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
        recent: Annotated[int, typer.Option(min=1, help="How many recent jobs --dry-run routes again.")] = 200,
    ) -> None:
        """Validate a configuration in full and make it the version in effect (within CONFIG_MAX_AGE_SECONDS)."""
        target = target_of(ctx, "table")
        try:
            config = configs.read_config_file(path)
        except ConfigError as exc:
            raise UsageError(f"{path}: {exc}") from exc
        store = _store(target)
        plan = configs.plan_push(store, config, jobs.list_jobs(target.queries, limit=recent))
        say(f"valid: {len(config.rules.root)} rule(s), digest {config.digest}")
        say(f"{len(plan.changes)} of {plan.checked} recent file(s) would be routed differently from how they ran")
        for change in plan.changes[:50]:
            say("  ", text(change.key, "bold"), f": {change.before} -> {change.after}")
        if dry_run:
            say("dry run: nothing pushed")
            return
        try:
            version = configs.push(store, plan, note)
        except ConfigError as exc:
            raise UsageError(str(exc)) from exc
        say(f"pushed {version.label}: the functions use it within their cache's max age (60 s by default)")

    @config_app.command("history")
    def config_history(
        ctx: typer.Context,
        limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    ) -> None:
        """Every configuration version pushed, newest first."""
        versions = _store(target_of(ctx, "table")).history(limit)
        table = Table("version", "pushed", "digest", "rules", "note")
        for v in versions:
            table.add_row(
                text(v.label), _when(v.pushed_at), v.config.digest, str(len(v.config.rules.root)), text(v.note)
            )
        console.print(table)
        if not versions:
            say("no configuration pushed: v0, the deployment's parameters, is in effect")

    @config_app.command("rollback")
    def config_rollback(
        ctx: typer.Context, version: Annotated[int, typer.Argument(min=1, help="The version to bring back.")]
    ) -> None:
        """Make an earlier version's configuration current again (as a new version: history only grows)."""
        try:
            pushed = _store(target_of(ctx, "table")).rollback(version)
        except ConfigError as exc:
            raise UsageError(str(exc)) from exc
        say(f"pushed {pushed.label} ({pushed.note})")

    @app.command()
    def history(
        ctx: typer.Context,
        key: Annotated[str, typer.Argument(help="An input key or s3://bucket/key URI.")],
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job.")] = False,
    ) -> None:
        """Every version and run of a key: outcome, configuration version, agent or prompt, credits, when."""
        target = target_of(ctx, "table", "output_bucket")
        object_key = parse_object(key, target.input_bucket).key
        entries = target.queries.for_key(object_key)
        live = [_history_row(job) for job in target.queries.rows(e.job_id for e in entries)]
        # Rows expire after ResultTtlDays; the documents stay: runs whose row is gone come from them.
        known = {r["job_id"] for r in live}
        kept = [r for r in _documented_runs(target, object_key) if r["job_id"] not in known]
        rows = sorted(live + kept, key=lambda r: (r["received"], r["run"]), reverse=True)
        if not rows:
            warn(f"no job for key {object_key!r}")
            raise typer.Exit(EXIT_PARTIAL)
        if as_json:
            for row in rows:
                emit_json(json.dumps(row))
            return
        table = Table("received", "version", "run", "outcome", "config", "ran", "credits", "job")
        for row in rows:
            table.add_row(
                row["received"],
                text(row["version"] or "-"),
                str(row["run"]),
                text(row["outcome"]),
                f"v{row['config_version']}",
                text(row["ran"]),
                "-" if row["credits"] is None else f"{row['credits']:g}",
                row["job_id"][:12] + ("" if row["job_id"] in known else " (row expired)"),
            )
        console.print(table)

    @app.command()
    def get(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(metavar="JOB", help="A key (?versionId=V), s3:// URI, job id or prefix.")],
        version: Annotated[
            str | None,
            typer.Option("--version", help="This object version (S3 version id, or ETag); default: the newest."),
        ] = None,
        run: Annotated[
            int | None, typer.Option("--run", min=1, help="This run of the version; default: its newest.")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="Write the document and its artifacts into this folder.")] = None,
        field: Annotated[str | None, typer.Option(help="Print one part of the response (a.b.0.c).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the whole document as JSON.")] = False,
    ) -> None:
        """A run's document (result or error): printed, one field of it, or saved with its artifacts.

        Without --version/--run, the job JOB names (a key: its newest job). Runs whose row expired
        (ResultTtlDays) are read from their documents, which stay."""
        target = target_of(ctx, "table", "output_bucket")
        job = _chosen_run(target, ref, version, run)
        if job is None:
            asked = "".join(f" {name} {v}" for name, v in (("--version", version), ("--run", run)) if v is not None)
            if asked:  # the file may well be known: it is the version or run that is not
                warn(f"no{asked} of {ref!r}: `vlmwatch history KEY` lists a file's versions and runs")
            else:
                warn(f"no job for {ref!r} (not a job id or prefix, key or s3:// URI, or execution id)")
            raise typer.Exit(EXIT_PARTIAL)
        uri = job.result_uri or job.error_uri
        if not uri:
            warn(f"{clean(job.key)}: run {job.run} has no document yet (status {job.status.value})")
            raise typer.Exit(EXIT_PARTIAL)
        s3 = target.client("s3")
        bucket, _, key = uri[5:].partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        document = json.loads(body)
        if field is not None:
            emit_json(json.dumps(_field(document.get("response"), field), ensure_ascii=False, indent=2))
        elif as_json or out is None:
            emit_json(json.dumps(document, ensure_ascii=False, indent=2))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / Path(key).name).write_bytes(body)
            for artifact in document.get("artifacts", []):
                a_bucket, _, a_key = artifact["s3_uri"][5:].partition("/")
                s3.download_file(a_bucket, a_key, str(out / Path(a_key).name))
            say(f"wrote {Path(key).name} and {len(document.get('artifacts', []))} artifact(s) to {out}")

    @app.command()
    def reprocess(
        ctx: typer.Context,
        refs: Annotated[
            list[str] | None, typer.Argument(metavar="[KEY|s3://PREFIX]...", help="Files to run again.")
        ] = None,
        status: Annotated[str | None, typer.Option("--status", help="Or: the keys of jobs in these statuses.")] = None,
        rule: Annotated[str | None, typer.Option(help="Or/and: only jobs routed by this rule.")] = None,
        since: Annotated[str | None, typer.Option(help="Or/and: only jobs changed since (30m, 2h, 3d, ISO).")] = None,
        config_version: Annotated[
            int | None, typer.Option(min=0, help="Run with this configuration version (default: the current).")
        ] = None,
        service_tier: Annotated[str | None, typer.Option(help="Run on this VLM Run tier (flex: half price).")] = None,
        limit: Annotated[int, typer.Option(min=1, help="At most this many files.")] = 1000,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show how many files and credits; start nothing.")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before more than 10 files.")] = False,
    ) -> None:
        """Start a new run of files already processed, with the current or a named configuration version.

        Every run's documents are kept (`versions/<v>/runs/<n>/`); the stable path shows the newest run of
        the newest version. Running the same reprocess twice starts nothing twice."""
        from vlmwatch_cli import runs
        from vlmwatch_cli.main import _since

        target = target_of(ctx, "table", "input_bucket")
        statuses = jobs.parse_statuses(status)
        keys = runs.select_keys(target, refs or [], statuses=statuses, rule=rule, since=_since(since), limit=limit)
        plan = runs.plan_reprocess(target, keys, config_version=config_version, service_tier=service_tier)
        for key, why in plan.left:
            say("  left ", text(key, "bold"), f": {why}")
        tier = f", tier {plan.service_tier}" if plan.service_tier else ""
        say(
            f"{len(plan.runs)} file(s) to run again with v{plan.config_version}{tier}; "
            f"their last runs used {plan.credits:g} credits"
        )
        if dry_run or not plan.runs:
            if dry_run:
                for p in plan.runs[:50]:
                    last = p.last
                    was = f"v{last.route.config_version}" if last.route else "no route"
                    outcome = (last.outcome or last.status).value
                    say("  would run ", text(last.key, "bold"), f": run {p.run} (run {last.run}: {outcome}, {was})")
                if len(plan.runs) > 50:
                    say(f"  ... and {len(plan.runs) - 50} more")
                say("dry run: nothing started")
            return
        if len(plan.runs) > 10 and not yes:
            typer.confirm(f"start {len(plan.runs)} runs?", abort=True)
        sent = runs.start(target.need("ingest_queue_url"), plan)
        say(f"started {sent} run(s): the ingest submits them under the request budget; `vlmwatch history KEY`")

    @app.command()
    def compare(
        ctx: typer.Context,
        prefix: Annotated[str, typer.Option(help="Input keys under this prefix (or s3://bucket/prefix).")],
        runs_: Annotated[
            tuple[int, int] | None, typer.Option("--runs", help="Two run numbers of each file, e.g. --runs 1 2.")
        ] = None,
        configs_: Annotated[
            tuple[int, int] | None,
            typer.Option("--configs", help="Or: the newest runs made with two configuration versions."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Per field counts as JSON.")] = False,
    ) -> None:
        """Per response field, how many files agree, differ or lack it between two runs (or configurations)."""
        from vlmwatch_cli import runs

        if (runs_ is None) == (configs_ is None):
            raise UsageError("give exactly one of --runs A B and --configs X Y")
        target = target_of(ctx, "table", "input_bucket")
        uri = prefix if prefix.startswith("s3://") else f"s3://{target.input_bucket}/{prefix}"
        keys = list(runs._keys_under(target, uri))
        side_a: tuple[int | None, int | None]
        side_b: tuple[int | None, int | None]
        if runs_ is not None:
            side_a, side_b = (runs_[0], None), (runs_[1], None)
        else:
            assert configs_ is not None  # one of the two, checked above
            side_a, side_b = (None, configs_[0]), (None, configs_[1])
        result = runs.compare(target, keys, side_a, side_b)
        if as_json:
            fields = {name: vars(count) for name, count in sorted(result.fields.items())}
            emit_json(json.dumps({"files": result.files, "compared": result.compared, "fields": fields}, indent=2))
            return
        table = Table("field", "agree", "differ", "only A", "only B", "examples of a difference")
        for name, count in sorted(result.fields.items()):
            table.add_row(
                text(name), str(count.agree), str(count.differ), str(count.only_a), str(count.only_b),
                text("; ".join(count.examples)),
            )  # fmt: skip
        console.print(table)
        say(f"{result.compared} of {result.files} file(s) compared")
        for key, why in result.missing[:20]:
            say("  not compared ", text(key, "bold"), f": {why}")

    @app.command()
    def query(
        ctx: typer.Context,
        sql: Annotated[str, typer.Argument(help='SQL over the table `results`, e.g. "SELECT rule, sum(credits) ..."')],
        since: Annotated[str | None, typer.Option(help="Only partitions from this day on (YYYY-MM-DD).")] = None,
        cache: Annotated[Path | None, typer.Option(help="Where the local copy of the index is kept.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Rows as a JSON list of objects.")] = False,
    ) -> None:
        """Run SQL over the results index locally (DuckDB; the same SQL runs in Athena over the Glue table)."""
        target = target_of(ctx, "output_bucket")
        if since is not None:
            try:
                datetime.strptime(since, "%Y-%m-%d")
            except ValueError as exc:
                raise UsageError("--since takes a day, YYYY-MM-DD") from exc
        folder = cache or default_cache(target.output_bucket, target.output_prefix)
        sync_index(target.client("s3"), target.output_bucket, target.output_prefix, folder, since_day=since)
        try:
            columns, rows = run_query(sql, folder)
        except ImportError as exc:
            raise UsageError("`vlmwatch query` needs DuckDB: pip install 'vlmwatch[query]'") from exc
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if as_json:
            emit_json(rows_as_json(columns, rows))
            return
        table = Table(*columns)
        for row in rows:
            table.add_row(*(text("" if v is None else v) for v in row))
        console.print(table)


def _history_row(job: Job) -> dict[str, Any]:
    route = job.route
    ran = "-" if route is None else (f"agent {route.agent}" if route.agent else f"prompt (rule {route.rule})")
    return {
        "job_id": job.job_id,
        "received": _when(job.created_at),
        "version": job.version_id or (f"etag {job.etag}" if job.etag else None),
        "run": job.run,
        "outcome": (job.outcome or job.status).value,
        "config_version": route.config_version if route else 0,
        "ran": ran if job.status.value != "skipped" else f"skipped: {job.skip_reason}",
        "credits": job.credits_used,
        "document": job.result_uri or job.error_uri,
    }


def _documented_runs(target: Target, key: str) -> list[dict[str, Any]]:
    """History rows from the documents in the key's output folder (every version, every run)."""
    from vlmwatch_cli import runs

    return [_history_row(job) for job in runs.documented_runs(target, key)]


def _chosen_run(target: Target, ref: str, version: str | None, run: int | None) -> Job | None:
    """The run ``get`` shows: the job ``ref`` names, or with ``version``/``run`` that run of that version
    of its key (by default the newest version, the newest run); from the rows, else from the documents."""
    from vlmwatch_cli import runs

    found = Resolver(target.queries, target.input_bucket).find(ref)
    if found is not None and version is None and run is None:
        return found
    obj = parse_object(ref, target.input_bucket)
    if found is not None and found.key != obj.key:
        key, version = found.key, version or found.version.path_token  # named by its id: that job's version
    else:
        key, version = obj.key, version or obj.version
    if not key:
        return None
    known = runs.known_runs(target, key)
    chosen = _matching(known, version, run)
    if chosen is None:  # that version's rows may all have expired while newer versions' are still there
        ids = {j.job_id for j in known}
        chosen = _matching(known + [j for j in runs.documented_runs(target, key) if j.job_id not in ids], version, run)
    return chosen


def _matching(jobs_: list[Job], version: str | None, run: int | None) -> Job | None:
    from vlmwatch_cli import runs

    if version is not None:
        # A version id names one version; an ETag may be shared by uploads of the same bytes: the newest.
        exact = [j for j in jobs_ if version in (j.version_id, j.version.path_token)]
        jobs_ = exact or [j for j in jobs_ if version == j.etag]
    jobs_ = runs.newest_version_runs(jobs_)
    if run is not None:
        jobs_ = [j for j in jobs_ if j.run == run]
    return max(jobs_, key=lambda j: (j.run, j.created_at)) if jobs_ else None


def _field(response: Any, path: str) -> Any:
    node = response
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise UsageError(f"the response has no {path!r} (stopped at {part!r})")
    return node
