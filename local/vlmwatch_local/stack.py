"""The local stack: moto in server mode, the template's resources, the emulator on a port, and the loops.

This process plays the Lambda runtime: it sets the functions' environment (as the template declares it)
in ``os.environ`` and calls the real handlers. ``stop()`` puts the environment back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from vlmwatch.runtime import wiring
from vlmwatch_local.emulator import Emulator, EmulatorConfig
from vlmwatch_local.loops import FunctionUrlApp, LocalAws
from vlmwatch_local.provision import Stack, provision

REGION = "us-east-1"


@dataclass
class LocalStack:
    """Start with :meth:`start`, drive with ``.aws`` (see :class:`LocalAws`), end with :meth:`stop`.

    Args:
        emulator_config: how the emulator behaves (ignored with ``vlmrun_base_url``).
        vlmrun_base_url, api_key: use a real VLM Run instead of the emulator.
        env: extra function environment (e.g. ``POLL_BASE_SECONDS``).
        parameters: template parameter overrides.
    """

    emulator_config: EmulatorConfig = field(default_factory=EmulatorConfig)
    vlmrun_base_url: str | None = None
    api_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    webhook: bool = False
    webhook_secret: str = "local-webhook-secret"  # noqa: S105 - a local test value, stored in moto's Secrets Manager
    moto_process: bool = True

    def start(self) -> LocalStack:
        self._saved_env = dict(os.environ)
        self.endpoint = self._start_moto()
        # moto keeps its state per process: start every local stack from nothing.
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_METRICS_DISABLED": "1",
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        self.stack: Stack = provision(region=REGION, parameters=self.parameters, endpoint_url=self.endpoint)

        self.emulator: Emulator | None = None
        if self.vlmrun_base_url:
            base_url, key = self.vlmrun_base_url, self.api_key or ""
        else:
            self.emulator = Emulator(self.emulator_config)
            self._server = make_server("127.0.0.1", 0, self.emulator.app, threaded=True)
            base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
            self.emulator.config.public_url = base_url
            key = self.emulator.config.api_key
            self._stop = threading.Event()
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            threading.Thread(target=self._tick, daemon=True).start()
        self.vlmrun_base_url = base_url
        # The API key lives in Secrets Manager, as deployed; functions read it through powertools.
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name=self.stack.parameters["ApiKeySecretName"], SecretString=key)
        os.environ.update(self.stack.environment())
        os.environ.update(
            {
                "VLMRUN_BASE_URL": base_url,
                "POWERTOOLS_LOG_LEVEL": self._saved_env.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            }
        )
        self.aws = LocalAws(self.stack, endpoint_url=self.endpoint)
        self.webhook_url: str | None = None
        if self.webhook:
            # The function URL, served on localhost; the emulator signs and sends callbacks to it.
            secret_name = self.stack.parameters["WebhookSecretName"]
            secrets.create_secret(Name=secret_name, SecretString=self.webhook_secret)
            self._hook_server = make_server("127.0.0.1", 0, FunctionUrlApp(self.aws), threaded=True)
            threading.Thread(target=self._hook_server.serve_forever, daemon=True).start()
            self.webhook_url = f"http://127.0.0.1:{self._hook_server.server_port}/"
            os.environ.update(
                {"CALLBACK_URL": self.webhook_url, "WEBHOOK_SECRET": secret_name, "WEBHOOK_ENABLED": "true"}
            )
            if self.emulator is not None:
                self.emulator.config.webhook_secret = self.webhook_secret
        os.environ.update(self.env)
        wiring.reset()
        return self

    def _start_moto(self) -> str:
        """moto in a process of its own: this process plays every Lambda and the emulator, and with the GIL
        one process gets one core; AWS's side gets the other."""
        if not self.moto_process:
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            return f"http://{host}:{port}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._moto_proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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
        if self.moto_process:
            self._moto_proc.terminate()
            try:
                self._moto_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._moto_proc.kill()
        else:
            self._moto.stop()

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            assert self.emulator is not None
            self.emulator.tick()

    def stop(self) -> None:
        if self.emulator is not None:
            self._stop.set()
            self._server.shutdown()
        if self.webhook_url:
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

    def drop(self, key: str, body: bytes, content_type: str | None = None) -> None:
        self.stack.drop(key, body, content_type)

    def jobs(self) -> list[dict[str, Any]]:
        return self.stack.jobs()

    def output_keys(self) -> list[str]:
        return self.stack.output_keys()

    def run_until_settled(
        self, *, expected: int, timeout: float = 120.0, interval: float = 0.3, on_change: Any = None
    ) -> bool:
        """Turn the loops until ``expected`` jobs are delivered or skipped; False on timeout."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.aws.step()
            jobs = self.jobs()
            if on_change is not None:
                for job in jobs:
                    if seen.get(job["job_id"]) != job["status"]:
                        seen[job["job_id"]] = job["status"]
                        on_change(job)
            if len(jobs) >= expected and all(j["status"] in ("delivered", "skipped") for j in jobs):
                return True
            time.sleep(interval)
        return False
