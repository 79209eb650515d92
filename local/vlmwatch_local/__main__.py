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
import shutil
import sys
import time
from pathlib import Path

import boto3

from vlmwatch.output import OutputWriter
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


def demo(args: argparse.Namespace) -> int:
    files = _files(args.files)
    real = bool(args.vlmrun_base_url)
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

        out_dir = Path(args.out)
        shutil.rmtree(out_dir, ignore_errors=True)
        s3 = boto3.client("s3")
        for key in outputs:
            target = out_dir / key
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(local.stack.output_bucket, key, str(target))

        print(f"\n{'file':<28} {'outcome':<10} {'polls':>5}  {'document':<56} artifacts")
        lost = []
        for key in keys:
            job = jobs.get(key)
            writer = OutputWriter(s3, local.stack.output_bucket, local.stack.parameters["OutputPrefix"])
            result, error = writer.latest_keys(key)
            document = result if result in outputs else error if error in outputs else None
            artifacts = sum(1 for k in outputs if k.startswith(writer.folder(key)) and "/artifacts/" in k)
            outcome = (job or {}).get("outcome") or (job or {}).get("status") or "missing"
            if document is None and outcome != "skipped":
                lost.append(key)
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
        if not settled or lost:
            print(f"\nLOST: {', '.join(lost) or 'jobs did not settle before the timeout'}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmwatch_local")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the pipeline locally on the sample files (or yours)")
    p.add_argument("files", nargs="*", help="files or folders to drop (default: samples/)")
    p.add_argument("--out", default="demo-output", help="folder to copy the outputs to")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every job to finish")
    p.add_argument("--step-seconds", type=float, default=1.0, help="emulator: seconds per status step")
    p.add_argument("--webhook", action="store_true", help="VLM Run calls back a local function URL (polling slows)")
    p.add_argument("--agent", default="doc-extractor:v1", help="agent for files no demo rule matches")
    p.add_argument("--vlmrun-base-url", help="use this VLM Run instead of the emulator (key: $VLMRUN_API_KEY)")
    p.set_defaults(func=demo)
    b = sub.add_parser("bench", help="load benchmark on the local stack; prints numbers")
    b.add_argument("--files", type=int, default=200)
    b.add_argument("--step-seconds", type=float, default=0.5, help="emulator: seconds per status step")
    b.add_argument("--webhook", action="store_true", help="with VLM Run callbacks to the local function URL")
    b.set_defaults(func=lambda a: __import__("vlmwatch_local.bench", fromlist=["main"]).main(a))
    c = sub.add_parser("chaos", help="fault harness on the local stack; checks the invariants, prints a table")
    c.add_argument("--files", type=int, default=1000)
    c.add_argument("--webhook", action="store_true", help="VLM Run callbacks on (dropped and delayed ones too)")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--timeout", type=float, default=1800.0, help="seconds for everything to settle")
    c.set_defaults(func=lambda a: __import__("vlmwatch_local.chaos", fromlist=["main"]).main(a))
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request lines from moto and the emulator
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the emulator reading a broken PDF on purpose
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
