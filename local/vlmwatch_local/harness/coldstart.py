"""Cold start, measured: median import time of each handler in fresh interpreters, beside a baseline.

``python -m vlmwatch_local coldstart [--runs 11] [--no-pyc]`` prints, for every handler, the median time of
``import app`` in a new interpreter with the function's environment (tracing on, as in Lambda), run
interleaved with the baseline (boto3 with S3 and DynamoDB clients, httpx, pydantic, powertools Logger and
Metrics: what any handler of this shape needs) so both see the same machine load. ``--no-pyc`` makes every
run compile from source, as a layer without bytecode does on Lambda's read-only /opt. It also prints the
size of the built layer when ``.aws-sam/build`` has one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vlmwatch_local import ROOT

# What a function sees on Lambda: the layer's requirements plus the runtime's boto3, nothing else (the
# project's .venv also has the CLI's rich, which httpx imports when it is there).
LAYER_VENV = ROOT / ".venv-layer"
HANDLERS = ("ingest", "poller", "pollonce", "webhook", "complete")
BASELINE = (
    "import boto3; boto3.client('s3'); boto3.client('dynamodb'); import httpx, pydantic; "
    "from aws_lambda_powertools import Logger, Metrics; Logger(); Metrics()"
)
TIMER = "import time, sys; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
# What each handler's first invocation builds before its first request (clients, models): "import" moves
# nothing into the first invocation unseen, "ready" counts it.
FIRST_USE = {
    "ingest": "wiring.ingestor()",
    "poller": "wiring.sweeper()",
    "pollonce": "wiring.step_loop()",
    "webhook": "wiring.webhook_receiver()",
    "complete": "wiring.deliverer()",
}


def _env(handler: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_ENDPOINT"))}
    env.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_LAMBDA_FUNCTION_NAME": f"vlmwatch-{handler}",  # powertools: "in Lambda", tracing on
            "POWERTOOLS_SERVICE_NAME": f"vlmwatch-{handler}",
            "POWERTOOLS_METRICS_NAMESPACE": "vlmwatch",
            "JOBS_TABLE_NAME": "jobs",
            "OUTPUT_BUCKET": "out",
            "INPUT_BUCKET": "in",
        }
    )
    return env


def layer_python() -> str:
    """The interpreter of a virtualenv that holds what Lambda would: the layer's requirements and boto3."""
    python = LAYER_VENV / "bin" / "python"
    stamp = LAYER_VENV / ".installed"
    requirements = ROOT / "layers" / "vlmwatch" / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        print(f"creating {LAYER_VENV.name} (the layer's requirements + boto3, as on Lambda)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LAYER_VENV)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - pip from the venv we just made
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements), "boto3"], check=True
        )
        stamp.write_text(requirements.read_text())
    return str(python)


def _time(code: str, env: dict[str, str], *, cwd: Path, no_pyc: bool) -> float:
    args = [layer_python()]
    with tempfile.TemporaryDirectory() as cache:
        if no_pyc:
            # An empty bytecode cache that is never written: every module compiles from source.
            args += ["-X", f"pycache_prefix={cache}", "-B"]
        out = subprocess.run(  # noqa: S603 - our own interpreter
            [*args, "-c", TIMER.format(code=code)], env=env, cwd=cwd, capture_output=True, text=True, check=True
        )
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def measure(runs: int = 11, *, no_pyc: bool = False) -> dict[str, float]:
    """Median milliseconds per handler (import, and import + first use) and for the baseline, interleaved."""
    names = ["baseline", *HANDLERS, *(f"{h}+ready" for h in HANDLERS)]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):
        samples["baseline"].append(_time(BASELINE, _env("baseline"), cwd=ROOT, no_pyc=no_pyc))
        for handler in HANDLERS:
            env = _env(handler)
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "functions" / handler), str(ROOT / "layers" / "vlmwatch")])
            cwd = ROOT / "functions" / handler
            samples[handler].append(_time("import app", env, cwd=cwd, no_pyc=no_pyc))
            ready = f"import app; from vlmwatch.runtime import wiring; {FIRST_USE[handler]}"
            samples[f"{handler}+ready"].append(_time(ready, env, cwd=cwd, no_pyc=no_pyc))
    return {name: statistics.median(values) for name, values in samples.items()}


def layer_size() -> tuple[int, int] | None:
    """(bytes unpacked, files) of the built layer, if ``make build`` made one."""
    layer = ROOT / ".aws-sam" / "build" / "VlmwatchLayer"
    if not layer.exists():
        return None
    files = [p for p in layer.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main(args: Any) -> int:
    medians = measure(args.runs, no_pyc=args.no_pyc)
    base = medians["baseline"]
    mode = "compiled from source (no .pyc)" if args.no_pyc else "with .pyc"
    print(f"median import time, {args.runs} fresh interpreters each, {mode}:")
    print(f"  {'baseline':<10} {base:7.1f} ms   (boto3 + S3/DynamoDB clients + httpx + pydantic + Logger/Metrics)")
    worst = 0.0
    print(f"  {'handler':<10} {'import':>10} {'x base':>7}   {'+ first use':>12} {'x base':>7}")
    for handler in HANDLERS:
        ratio = medians[handler] / base
        ready = medians[f"{handler}+ready"]
        worst = max(worst, ratio)
        print(f"  {handler:<10} {medians[handler]:7.1f} ms {ratio:6.2f}x   {ready:9.1f} ms {ready / base:6.2f}x")
    print(f"  worst handler import: {worst:.2f}x baseline (target <= 0.80x)")
    print("  (+ first use: the import plus what the first invocation builds: clients, the job store, models)")
    size = layer_size()
    if size:
        print(f"built layer: {size[0] / 1e6:.1f} MB unpacked, {size[1]} files (target <= 20 MB)")
    return 0
