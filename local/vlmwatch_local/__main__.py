"""``python -m vlmwatch_local demo [files...]``: the whole pipeline on this machine.

Starts moto in server mode, provisions what template.yaml declares, starts the VLM Run emulator (or uses
the real VLM Run with ``--vlmrun-base-url`` and ``VLMRUN_API_KEY``), drops the files into the input bucket,
runs the real handlers through local event-source loops, shows progress, copies the outputs to a local
folder and prints a summary. Exits 1 if any file ends without a result or error document.
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import os
import signal
import sys
import time
from pathlib import Path

import boto3

from vlmwatch.core.layout import OutputLayout
from vlmwatch_local.emulator import EmulatorConfig
from vlmwatch_local.stack import LocalStack

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
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
        text = "".join(f"export {k}={v}\n" for k, v in exports.items())
        if args.env_file:
            Path(args.env_file).write_text(text)
        print("local stack up (moto + VLM Run emulator). In another shell:\n")
        print(text if not args.env_file else f"  source {args.env_file}")
        print("  .venv/bin/vlmwatch submit samples/invoice.pdf --wait\n\nCtrl-C stops it.", flush=True)
        try:
            while True:
                local.aws.step()
                time.sleep(0.3)
        except KeyboardInterrupt:
            print("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmwatch_local")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the pipeline locally on the sample files (or yours)")
    p.add_argument("files", nargs="*", help="files or folders to drop (default: samples/)")
    p.add_argument("--out", default="demo-output", help="outputs are copied to a new run-<time>/ folder inside this")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every job to finish")
    p.add_argument("--step-seconds", type=float, default=1.0, help="emulator: seconds per status step")
    p.add_argument("--webhook", action="store_true", help="VLM Run calls back a local function URL (polling slows)")
    p.add_argument("--agent", default="doc-extractor:v1", help="agent for files no demo rule matches")
    p.add_argument("--vlmrun-base-url", help="use this VLM Run instead of the emulator (key: $VLMRUN_API_KEY)")
    p.set_defaults(func=demo)
    u = sub.add_parser("up", help="keep a local stack running for the vlmwatch CLI (prints the settings)")
    u.add_argument("--step-seconds", type=float, default=1.0, help="emulator: seconds per status step")
    u.add_argument("--agent", default="doc-extractor:v1", help="the deployment's default agent")
    u.add_argument("--webhook", action="store_true", help="VLM Run callbacks to a local function URL")
    u.add_argument("--env-file", help="also write the export lines to this file")
    u.set_defaults(func=up)
    b = sub.add_parser("bench", help="load benchmark on the local stack; prints numbers")
    b.add_argument("--files", type=int, default=200)
    b.add_argument("--step-seconds", type=float, default=0.5, help="emulator: seconds per status step")
    b.add_argument("--webhook", action="store_true", help="with VLM Run callbacks to the local function URL")
    b.set_defaults(func=lambda a: __import__("vlmwatch_local.bench", fromlist=["main"]).main(a))
    k = sub.add_parser("coldstart", help="median handler import times beside a baseline; built layer size")
    k.add_argument("--runs", type=int, default=11)
    k.add_argument("--no-pyc", action="store_true", help="compile every module from source on each run")
    k.set_defaults(func=lambda a: __import__("vlmwatch_local.coldstart", fromlist=["main"]).main(a))
    f = sub.add_parser("perf", help="requests, latency and AWS cost per mode, side by side (virtual time)")
    f.add_argument("--jobs", type=int, default=100)
    f.add_argument("--job-seconds", type=int, default=120)
    f.add_argument("--write", action="store_true", help="write docs/PERFORMANCE.md and docs/performance.png")
    f.add_argument("--coldstart-runs", type=int, default=11, help="handler import timings too (0 = skip)")
    f.add_argument("--throughput-files", type=int, default=1000, help="files/s on the local stack too (0 = skip)")
    f.set_defaults(func=lambda a: __import__("vlmwatch_local.perf", fromlist=["main"]).main(a))
    c = sub.add_parser("chaos", help="fault harness on the local stack; checks the invariants, prints a table")
    c.add_argument("--files", type=int, default=1000)
    c.add_argument("--webhook", action="store_true", help="VLM Run callbacks on (dropped and delayed ones too)")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--timeout", type=float, default=1800.0, help="seconds for everything to settle")
    c.set_defaults(func=lambda a: __import__("vlmwatch_local.chaos", fromlist=["main"]).main(a))
    args = parser.parse_args(argv)
    # `kill`, `timeout` and CI stop a run with SIGTERM: end it as Ctrl-C does, so the stack's context
    # managers stop the moto server process and the emulator instead of leaving them running.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request lines from moto and the emulator
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the emulator reading a broken PDF on purpose
    return int(args.func(args))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
