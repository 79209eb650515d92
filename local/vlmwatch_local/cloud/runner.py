"""The local runner: ``demo`` (the whole pipeline on this machine) and ``up`` (a stack kept running).

``python -m vlmwatch_local demo [files...]``:

Starts moto in server mode, provisions what template.yaml declares, starts the VLM Run emulator (or uses
the real VLM Run with ``--vlmrun-base-url`` and ``VLMRUN_API_KEY``), drops the files into the input bucket,
runs the real handlers through local event-source loops, shows progress, copies the outputs to a local
folder and prints a summary. Exits 1 if any file ends without a result or error document.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shlex
import sys
import time
from pathlib import Path

import boto3

from vlmwatch.core.layout import OutputLayout
from vlmwatch_local import ROOT
from vlmwatch_local.cloud.stack import LocalStack
from vlmwatch_local.emulator import EmulatorConfig

SAMPLES = ROOT / "samples"
# What the demo routes where: PDFs to an agent, images to an inline prompt with a schema, the rest to --agent.
DEMO_RULES = [
    {"name": "pdfs", "suffixes": [".pdf"], "agent": "invoice-extractor:v1"},
    {
        "name": "images",
        "content_types": ["image/*"],
        "prompt": "Describe the image.",
        "json_schema": {"type": "object", "properties": {"caption": {"type": "string"}}},
    },
]


def _files(paths: list[str]) -> list[Path]:
    if not paths:
        return sorted(p for p in SAMPLES.iterdir() if p.is_file())
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            out.append(path)
        else:
            raise SystemExit(f"no such file: {raw}")
    return out


def preflight(base_url: str, key: str | None) -> str | None:
    """Real mode, before anything starts: None if VLM Run answers with this key, else one line saying what to do."""
    import httpx

    if not key:
        return "VLMRUN_API_KEY is not set: export your VLM Run API key, or drop --vlmrun-base-url to use the emulator"
    url = base_url.rstrip("/") + "/agent/executions"
    try:
        response = httpx.get(url, params={"limit": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    except httpx.HTTPError as exc:
        return f"cannot reach VLM Run at {base_url} ({type(exc).__name__}): check the URL and this machine's network"
    if response.status_code in (401, 403):
        return f"VLM Run refused VLMRUN_API_KEY (HTTP {response.status_code}): check the key"
    if response.status_code >= 500:
        return f"VLM Run answered HTTP {response.status_code} at {url}: try again later"
    return None


def demo(args: argparse.Namespace) -> int:
    files = _files(args.files)
    real = bool(args.vlmrun_base_url)
    if real:
        problem = preflight(args.vlmrun_base_url, os.environ.get("VLMRUN_API_KEY"))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    # Outputs go to a fresh folder inside --out: nothing that was there is touched.
    out_dir = Path(args.out) / time.strftime("run-%Y%m%d-%H%M%S")
    while out_dir.exists():
        out_dir = out_dir.with_name(out_dir.name + "-1")
    env = {"POLL_BASE_SECONDS": "1", "POLL_CAP_SECONDS": "4", "JOB_DEADLINE_SECONDS": str(int(args.timeout))}
    if real:
        # The real service cannot fetch from a moto server on localhost: send the bytes instead.
        env["INPUT_MODE"] = "upload"
    local = LocalStack(
        emulator_config=EmulatorConfig(step_seconds=args.step_seconds),
        vlmrun_base_url=args.vlmrun_base_url,
        api_key=os.environ.get("VLMRUN_API_KEY") if real else None,
        env=env,
        parameters={"AgentName": args.agent, "RoutingRules": json.dumps(DEMO_RULES)},
        webhook=args.webhook and not real,
        polling_mode=args.polling_mode,
    )
    started = time.monotonic()
    with local:
        print(f"moto server      {local.endpoint}")
        print(f"VLM Run          {local.vlmrun_base_url}{'' if real else '  (emulator)'}")
        print(f"input bucket     s3://{local.stack.input_bucket}")
        print(f"output bucket    s3://{local.stack.output_bucket}")
        print(f"job table        {local.stack.table}")
        if local.webhook_url:
            print(f"webhook (fn URL) {local.webhook_url}")
        print(f"polling mode     {args.polling_mode}{' (local Step Functions)' if local.machines else ''}")
        print()
        keys = {}
        for path in files:
            key = f"inbox/{path.name}"
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            local.drop(key, path.read_bytes(), ctype)
            keys[key] = path
            print(f"dropped          {key}  ({path.stat().st_size} bytes, {ctype})")
        print()

        def show(job: dict) -> None:
            t = time.monotonic() - started
            extra = job.get("execution_id") or job.get("skip_reason") or ""
            print(f"  {t:6.1f}s  {job['key']:<28} {job['status']:<10} {extra}")

        settled = local.run_until_settled(expected=len(files), timeout=args.timeout, on_change=show)
        jobs = {j["key"]: j for j in local.jobs()}
        outputs = local.output_keys()

        s3 = boto3.client("s3")
        out_dir.mkdir(parents=True)
        for key in outputs:
            target = out_dir / key
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(local.stack.output_bucket, key, str(target))

        print(f"\n{'file':<28} {'outcome':<10} {'polls':>5}  {'document':<56} artifacts")
        unfinished: list[str] = []
        for key in keys:
            job = jobs.get(key)
            writer = OutputLayout(local.stack.output_bucket, local.stack.parameters["OutputPrefix"])
            result, error = writer.latest_keys(key)
            document = result if result in outputs else error if error in outputs else None
            artifacts = sum(1 for k in outputs if k.startswith(writer.folder(key)) and "/artifacts/" in k)
            outcome = (job or {}).get("outcome") or (job or {}).get("status") or "not ingested"
            if document is None and outcome != "skipped":
                unfinished.append(f"{key} ({outcome})")
            print(
                f"{key:<28} {outcome:<10} {int((job or {}).get('poll_count', 0)):>5}  "
                f"{(document or '-'):<56} {artifacts}"
            )
            if job and job.get("error") and outcome != "completed":
                print(f"{'':<28} └─ {job['error']}")
        if local.machines is not None:
            machines = local.machines
            machines.run_due()  # a release lands on the execution's next turn, as in AWS: give it that turn
            print(
                f"\nstate machines: {len(machines.executions)} executions, {machines.transitions} state transitions"
                f" ({machines.running} still running)"
            )
        if local.emulator is not None:
            requests = sum(v for k, v in local.emulator.requests.items() if k.startswith(("GET", "POST")))
            print(f"\nVLM Run requests: {requests} ({dict(sorted(local.emulator.requests.items()))})")
        print(f"outputs copied to {out_dir.resolve()}/ ({len(outputs)} objects)")
        print(f"finished in {time.monotonic() - started:.1f}s")
        if not settled or unfinished:
            # Not "lost": each of these still has its job row (or its message in the queue); the run stopped
            # waiting for them. What is lost would be a file with neither: the pipeline's tests say none are.
            waiting = ", ".join(unfinished) or "jobs still in flight"
            print(f"\nUNFINISHED after {args.timeout:.0f} s (still queued or in flight): {waiting}", file=sys.stderr)
            return 1
    return 0


def up(args: argparse.Namespace) -> int:
    """Keep a local stack running (the loops turning) for the `vlmwatch` CLI, until Ctrl-C."""
    local = LocalStack(
        emulator_config=EmulatorConfig(step_seconds=args.step_seconds),
        env={"POLL_BASE_SECONDS": "1", "POLL_CAP_SECONDS": "4"},
        parameters={"AgentName": args.agent},
        webhook=args.webhook,
        polling_mode=args.polling_mode,
    )
    with local:
        stack = local.stack
        exports = {
            "AWS_ENDPOINT_URL": local.endpoint,
            "AWS_DEFAULT_REGION": stack.region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "VLMWATCH_INPUT_BUCKET": stack.input_bucket,
            "VLMWATCH_OUTPUT_BUCKET": stack.output_bucket,
            "VLMWATCH_TABLE": stack.table,
            "VLMWATCH_INGEST_QUEUE_URL": stack.ingest_queue_url,
            "VLMWATCH_DLQ_URL": stack.queues["IngestDLQ"],
            "VLMWATCH_FAILED_DELIVERIES_URL": stack.queues["FailedDeliveriesQueue"],
        }
        text = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in exports.items())
        print("local stack up (moto + VLM Run emulator). In another shell, one variable names it:\n")
        if args.env_file:
            env_file = Path(args.env_file).resolve()
            env_file.write_text(text)
            print(f"  export VLMWATCH_STACK={env_file}")
            print(f"  (or `source {args.env_file}` to put the endpoint and names in the shell, for the aws CLI too)\n")
        else:
            print(text)
        print("  .venv/bin/vlmwatch submit samples --prefix inbox --wait\n\nCtrl-C stops it.", flush=True)
        try:
            while True:
                local.aws.step()
                time.sleep(0.3)
        except KeyboardInterrupt:
            print("stopped")
    return 0
