"""``python -m vlmwatch_local <command>``: the local runner and the harnesses.

* ``demo``, ``up``: the pipeline on this machine (:mod:`vlmwatch_local.cloud.runner`);
* ``bench``, ``chaos``, ``perf``, ``coldstart``: the experiments (:mod:`vlmwatch_local.harness`), imported
  only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import Any


def _harness(name: str) -> Any:
    """The command of ``vlmwatch_local.harness.<name>``, imported when it runs."""
    return lambda args: importlib.import_module(f"vlmwatch_local.harness.{name}").main(args)


def _polling_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--polling-mode",
        choices=["schedule", "stepfunctions"],
        default="schedule",
        help="how jobs are tracked, as the template's PollingMode (default: schedule)",
    )


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
    _polling_mode(p)
    p.set_defaults(func=lambda a: _runner().demo(a))
    u = sub.add_parser("up", help="keep a local stack running for the vlmwatch CLI (prints the settings)")
    u.add_argument("--step-seconds", type=float, default=1.0, help="emulator: seconds per status step")
    u.add_argument("--agent", default="doc-extractor:v1", help="the deployment's default agent")
    u.add_argument("--webhook", action="store_true", help="VLM Run callbacks to a local function URL")
    u.add_argument(
        "--env-file", default=".vlmwatch.env", help="write the export lines here (default: .vlmwatch.env; '' for none)"
    )
    _polling_mode(u)
    u.set_defaults(func=lambda a: _runner().up(a))
    b = sub.add_parser("bench", help="load benchmark on the local stack; prints numbers")
    b.add_argument("--files", type=int, default=200)
    b.add_argument("--step-seconds", type=float, default=0.5, help="emulator: seconds per status step")
    b.add_argument("--webhook", action="store_true", help="with VLM Run callbacks to the local function URL")
    b.add_argument("--duplicates", action="store_true", help="every S3 event delivered twice")
    b.add_argument("--timeout", type=float, default=600.0, help="seconds for everything to settle")
    b.add_argument("--moto", choices=["in-process", "process", "thread"], default="in-process", help="where moto runs")
    _polling_mode(b)
    b.set_defaults(func=_harness("bench"))
    k = sub.add_parser("coldstart", help="median handler import times beside a baseline; built layer size")
    k.add_argument("--runs", type=int, default=11)
    k.add_argument("--no-pyc", action="store_true", help="compile every module from source on each run")
    k.set_defaults(func=_harness("coldstart"))
    f = sub.add_parser("perf", help="requests, latency and AWS cost per mode, side by side (virtual time)")
    f.add_argument("--jobs", type=int, default=100)
    f.add_argument("--job-seconds", type=int, default=120)
    f.add_argument("--write", action="store_true", help="write docs/PERFORMANCE.md and docs/performance.png")
    f.add_argument("--coldstart-runs", type=int, default=11, help="handler import timings too (0 = skip)")
    f.add_argument("--throughput-files", type=int, default=1000, help="files/s on the local stack too (0 = skip)")
    f.set_defaults(func=_harness("perf"))
    c = sub.add_parser("chaos", help="fault harness on the local stack; checks the invariants, prints a table")
    c.add_argument("--files", type=int, default=1000)
    c.add_argument("--webhook", action="store_true", help="VLM Run callbacks on (dropped and delayed ones too)")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--timeout", type=float, default=1800.0, help="seconds for everything to settle")
    c.add_argument("--outage", type=float, metavar="SECONDS", help="VLM Run down (503) once a third of files are in")
    c.add_argument("--credits", type=int, metavar="N", help="the account runs out of credits (402) after N executions")
    c.add_argument(
        "--top-up-after", type=float, default=30.0, metavar="SECONDS", help="...and is topped up this long after"
    )
    c.add_argument("--revoked-key", type=float, metavar="SECONDS", help="the API key refused (401) once half are in")
    c.add_argument(
        "--no-echo", action="store_true", help="executions do not echo their inputs (compare orphans and adoptions)"
    )
    _polling_mode(c)
    c.set_defaults(func=_harness("chaos"))
    r = sub.add_parser("drain", help="a big drop at a small plan's rate: requests per file, rate used, time vs floor")
    r.add_argument("--files", type=int, default=100)
    r.add_argument("--rpm", type=int, default=10)
    r.add_argument("--job-seconds", type=float, default=30.0)
    r.set_defaults(func=_harness("drain"))
    s = sub.add_parser("scale", help="1k/10k/100k files in flight in virtual time: poller runs, hot rows, $, drain")
    s.add_argument("--sizes", default="1000,10000,100000", help="files in flight, comma-separated")
    s.add_argument("--rpm", type=int, default=600, help="the plan's rate (RequestsPerMinute)")
    s.add_argument("--job-seconds", type=int, default=120, help="how long each execution runs at VLM Run")
    s.add_argument("--full-max", type=int, default=1000, help="sizes up to this run until the last document")
    s.add_argument("--window", type=int, default=10, help="poller runs sampled for larger sizes")
    s.add_argument("--json", help="also write the numbers to this file")
    s.add_argument(
        "--env", action="append", metavar="NAME=VALUE", help="function environment, e.g. POLLER_MAX_JOBS=1000"
    )
    s.set_defaults(func=_harness("scale"))
    args = parser.parse_args(argv)
    # `kill`, `timeout` and CI stop a run with SIGTERM: end it as Ctrl-C does, so the stack's context
    # managers stop the moto server process and the emulator instead of leaving them running.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request lines from moto and the emulator
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the emulator reading a broken PDF on purpose
    return int(args.func(args))


def _runner() -> Any:
    from vlmwatch_local.cloud import runner

    return runner


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
