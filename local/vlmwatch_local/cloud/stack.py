"""The local stack, the one stack class: moto, the template's resources, the VLM Run emulator and the loops.

Where AWS runs (``moto``):

* ``"process"`` (the default) or ``"thread"``: moto in server mode, in a process of its own or in a
  thread; the emulator served on a port with a thread moving its time on; the webhook's function URL
  served on a port. ``make demo`` and ``make up`` run this; the CLI can talk to it.
* ``"in-process"``: ``mock_aws`` in this process, no HTTP between the handlers and AWS (the fastest:
  bench, chaos and the tests run this). With ``serve=False`` nothing listens either: the runtime
  reaches the emulator through WSGI, callbacks go straight to the webhook handler, and the caller moves
  the emulator's time (:meth:`Emulator.tick`); with a virtual ``clock`` hours of VLM Run time take
  seconds (perf). With ``serve=True`` the emulator and the function URL are served on ports as above
  (real HTTP timeouts, as chaos's hanging POSTs need).

Either way moto runs with :mod:`.moto_speedups` (two hot spots of moto fixed), and the loops
(:class:`LocalAws`) follow the job table's stream, so waiting for jobs to settle costs no scan.

Either way this process plays the Lambda runtime: it sets the functions' environment (as the template
declares it) in ``os.environ``, wires the runtime to ``clock``, and calls the real handlers through
:class:`LocalAws`. ``stop()`` puts the environment back.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlparse

import boto3
import httpx
from werkzeug.serving import make_server

from vlmwatch.runtime import wiring
from vlmwatch_local.cloud import botocore_models, moto_speedups
from vlmwatch_local.cloud.loops import FunctionUrlApp, LocalAws, function_url_event
from vlmwatch_local.cloud.provision import StackResources, provision
from vlmwatch_local.cloud.stepfunctions import LocalStepFunctions
from vlmwatch_local.emulator import Emulator, EmulatorConfig
from vlmwatch_local.emulator.service import Fetcher

REGION = "us-east-1"
IN_PROCESS_VLMRUN = "http://emulator.localhost/v1"  # reached through WSGI, never over the network
IN_PROCESS_FUNCTION_URL = "http://function-url.localhost/"


@dataclass
class LocalStack:
    """Start with :meth:`start`, drive with ``.aws`` (see :class:`LocalAws`), end with :meth:`stop`.

    Args:
        emulator_config: how the emulator behaves (ignored with ``vlmrun_base_url``).
        vlmrun_base_url, api_key: use a real VLM Run instead of the emulator.
        env: extra function environment (e.g. ``POLL_BASE_SECONDS``).
        parameters: template parameter overrides.
        webhook: VLM Run calls back the webhook function (served, or invoked directly in-process).
        polling_mode: ``"schedule"`` (the scheduled poller) or ``"stepfunctions"`` (one state machine per
            job, run by :class:`~vlmwatch_local.cloud.stepfunctions.LocalStepFunctions` on the stack's clock).
        moto: where AWS runs: ``"process"``, ``"thread"`` or ``"in-process"`` (see the module).
        serve: serve the emulator and the function URL on ports (default: unless ``moto="in-process"``).
        clock: the one clock of the emulator and the handlers (None: the wall clock).
        fetch: how the emulator reads an input file's URL (default: HTTP; in-process: from moto).
    """

    emulator_config: EmulatorConfig = field(default_factory=EmulatorConfig)
    vlmrun_base_url: str | None = None
    api_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    webhook: bool = False
    polling_mode: Literal["schedule", "stepfunctions"] = "schedule"
    webhook_secret: str = "local-webhook-secret"  # noqa: S105 - a local test value, stored in moto's Secrets Manager
    moto: Literal["process", "thread", "in-process"] = "process"
    serve: bool | None = None
    clock: Callable[[], float] | None = None
    fetch: Fetcher | None = None

    @property
    def in_process(self) -> bool:
        return self.moto == "in-process"

    @property
    def served(self) -> bool:
        """The emulator and the function URL listen on ports (else they are reached in-process)."""
        return not self.in_process if self.serve is None else self.serve

    def start(self) -> LocalStack:
        self._saved_env = dict(os.environ)
        botocore_models.install()  # every function's session here parses the service models once
        self.endpoint: str | None = None
        if self.in_process:
            from moto import mock_aws

            moto_speedups.install()
            self._mock = mock_aws()
            self._mock.start()
        else:
            self.endpoint = self._start_moto()
            # moto keeps its state per process: start every local stack from nothing.
            httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        os.environ.update(
            {
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_METRICS_DISABLED": "1",
            }
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        if self.endpoint:
            os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        # The template's parameters for the mode asked for (the state machine's first state depends on both).
        parameters = {"PollingMode": self.polling_mode, "EnableWebhook": str(self.webhook).lower(), **self.parameters}
        self.stack: StackResources = provision(region=REGION, parameters=parameters, endpoint_url=self.endpoint)

        self.emulator: Emulator | None = None
        if self.vlmrun_base_url:
            base_url, self._key = self.vlmrun_base_url, self.api_key or ""
        else:
            base_url = self._start_emulator()
            self._key = self.emulator_config.api_key
        self.vlmrun_base_url = base_url
        secrets = boto3.client("secretsmanager")
        if self.served:
            # The API key lives in Secrets Manager, as deployed; functions read it through powertools.
            secrets.create_secret(Name=self.stack.parameters["ApiKeySecretName"], SecretString=self._key)
        self.function_env = {
            **self.stack.environment(),
            "VLMRUN_BASE_URL": base_url,
            "POWERTOOLS_LOG_LEVEL": self._saved_env.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }
        os.environ.update(self.function_env)  # before the handlers are imported: their loggers read it
        self.aws = LocalAws(self.stack, endpoint_url=self.endpoint)
        self.machines: LocalStepFunctions | None = None
        if self.stack.state_machine:
            handlers = {arn: logical.removesuffix("Function").lower() for logical, arn in self.stack.functions.items()}
            self.machines = LocalStepFunctions(
                self.stack.state_machine,
                self.stack.state_machine_arn,
                handlers,
                self.aws.invoke,
                self.clock or time.time,
            )
            self.aws.machines = self.machines
        self.webhook_url: str | None = None
        if self.webhook:
            secret_name = self.stack.parameters["WebhookSecretName"]
            secrets.create_secret(Name=secret_name, SecretString=self.webhook_secret)
            self.webhook_url = self._start_function_url()
            self.function_env.update(
                {"CALLBACK_URL": self.webhook_url, "WEBHOOK_SECRET": secret_name, "WEBHOOK_ENABLED": "true"}
            )
            if self.emulator is not None:
                self.emulator.config.webhook_secret = self.webhook_secret
        self.function_env.update(self.env)
        os.environ.update(self.function_env)
        self._wire()
        return self

    def update_env(self, values: dict[str, str]) -> None:
        """Change the functions' environment (e.g. a resource made after start) and rewire the runtime."""
        self.function_env.update(values)
        os.environ.update(values)
        self._wire()

    def _wire(self) -> None:
        """A fresh runtime (as a new Lambda container would have) on this stack's clock."""
        if not self.served and self.emulator is not None:
            from vlmwatch.core.settings import Settings

            wiring.use(
                settings=Settings.from_env(self.function_env),
                transport=httpx.WSGITransport(app=self.emulator.app),
                api_key=self._key,
                clock=self.clock,
                stepfunctions=self.machines,
            )
        else:
            wiring.use(clock=self.clock, stepfunctions=self.machines)

    # -- the emulator and the function URL ---------------------------------------------------------

    def _start_emulator(self) -> str:
        kwargs: dict[str, Any] = {}
        if self.clock is not None:
            kwargs["clock"] = self.clock
        if self.fetch is not None:
            kwargs["fetch"] = self.fetch
        elif self.in_process:
            kwargs["fetch"] = functools.partial(fetch_from_moto, s3=boto3.client("s3", region_name=REGION))
        if not self.served:
            kwargs["send"] = self._call_back
        self.emulator = Emulator(self.emulator_config, **kwargs)
        if not self.served:
            self.emulator.config.public_url = IN_PROCESS_VLMRUN
            return IN_PROCESS_VLMRUN
        self._server = make_server("127.0.0.1", 0, self.emulator.app, threaded=True)
        base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self.emulator.config.public_url = base_url
        self._stop = threading.Event()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()
        return base_url

    def _start_function_url(self) -> str:
        """The webhook's function URL: served on localhost, or (in-process) a name :meth:`_call_back` knows."""
        if not self.served:
            return IN_PROCESS_FUNCTION_URL
        self._hook_server = make_server("127.0.0.1", 0, FunctionUrlApp(self.aws), threaded=True)
        threading.Thread(target=self._hook_server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._hook_server.server_port}/"

    def _call_back(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """In-process: VLM Run's callback, handed to the webhook function as its function URL would."""
        parsed = urlparse(url)
        self.aws.invoke("webhook", function_url_event("POST", parsed.path or "/", headers, body, parsed.query))

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            assert self.emulator is not None
            self.emulator.tick()

    # -- moto -------------------------------------------------------------------------------------

    def _start_moto(self) -> str:
        """moto in a process of its own: this process plays every Lambda and the emulator, and with the GIL
        one process gets one core; AWS's side gets the other."""
        if self.moto == "thread":
            from moto.server import ThreadedMotoServer

            moto_speedups.install()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            return f"http://{host}:{port}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._moto_proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "vlmwatch_local.cloud.moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{endpoint}/moto-api/data.json", timeout=2)
                return endpoint
            except httpx.TransportError:
                if self._moto_proc.poll() is not None:
                    break
                time.sleep(0.1)
        self._moto_proc.kill()
        raise RuntimeError(f"moto server did not start on port {port}")

    def _stop_moto(self) -> None:
        if self.moto == "process":
            self._moto_proc.terminate()
            try:
                self._moto_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._moto_proc.kill()
        elif self.moto == "thread":
            self._moto.stop()
        else:
            self._mock.stop()

    def stop(self) -> None:
        if self.emulator is not None and self.served:
            self._stop.set()
            self._server.shutdown()
        if self.webhook_url and self.served:
            self._hook_server.shutdown()
        self._stop_moto()
        wiring.reset()
        os.environ.clear()
        os.environ.update(self._saved_env)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- conveniences -----------------------------------------------------------------------------

    def drop(self, key: str, body: bytes, content_type: str | None = None) -> str | None:
        return self.stack.drop(key, body, content_type)

    def jobs(self) -> list[dict[str, Any]]:
        return self.stack.jobs()

    def output_keys(self) -> list[str]:
        return self.stack.output_keys()

    def run_until_settled(
        self, *, expected: int, timeout: float = 120.0, interval: float = 0.3, on_change: Any = None
    ) -> bool:
        """Turn the loops until ``expected`` jobs are delivered or skipped; False on timeout (wall time).

        The job rows are followed on the table's stream (:attr:`LocalAws.rows`), not scanned; the loops
        wait ``interval`` only after a turn that found nothing to do."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.emulator is not None and not self.served:
                self.emulator.tick()
            done = self.aws.step()
            jobs = list(self.aws.rows.values())
            if on_change is not None:
                for job in jobs:
                    if seen.get(job["job_id"]) != job["status"]:
                        seen[job["job_id"]] = job["status"]
                        on_change(job)
            if len(jobs) >= expected and all(j["status"] in ("delivered", "skipped") for j in jobs):
                return True
            if not any(done.values()):
                time.sleep(interval)
        return False


def fetch_from_moto(url: str, s3: Any = None) -> tuple[bytes, str | None]:
    """Follow a presigned S3 URL inside ``mock_aws`` (nothing listens there: read the object with boto3;
    pass ``s3`` to reuse a client: making one costs more than the read)."""
    parsed = urlparse(url)
    host = parsed.netloc.split(":")[0]
    if host.endswith(".s3.amazonaws.com"):
        bucket, key = host.removesuffix(".s3.amazonaws.com"), unquote(parsed.path.lstrip("/"))
    else:
        bucket, _, key = unquote(parsed.path.lstrip("/")).partition("/")
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    version = parse_qs(parsed.query).get("versionId")
    if version:
        params["VersionId"] = version[0]
    obj = (s3 or boto3.client("s3", region_name=REGION)).get_object(**params)
    return obj["Body"].read(), obj.get("ContentType")
