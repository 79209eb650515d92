"""What chaos does to the handlers and to AWS: kills at named points, and the output bucket taken away.

* Kills: a :class:`SimulatedCrash` (a ``BaseException`` no handler can catch, as a timeout or an
  out-of-memory kill would be) raised around public library methods, after the step they name.
* The output bucket: the process's S3 client (``wiring.s3()``, the one the library writes with) refuses
  every ``PutObject`` to it with ``AccessDenied`` while ``outage_until`` is ahead, from a botocore event
  handler: no library code is replaced.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.claims import SubmitClaims
from vlmwatch.adapters.jobstore import JobStore
from vlmwatch.adapters.outputs import OutputWriter
from vlmwatch.adapters.vlmrun.client import VlmRunClient
from vlmwatch.runtime import wiring
from vlmwatch_local.harness.clock import Clock


class SimulatedCrash(BaseException):
    """The process is killed here: no ``except Exception`` sees it, nothing after it runs."""

    simulated = True


class FaultInjector:
    """Kills handlers at named points (around public library methods), and takes the output bucket away for
    a while: the process's S3 client (``wiring.s3()``, the one the library writes with) refuses every
    ``PutObject`` to it with ``AccessDenied``, from a botocore event handler."""

    def __init__(self, rng: random.Random, crash_rate: float, clock: Clock) -> None:
        self._rng = rng
        self._rate = crash_rate
        self._clock = clock
        self._lock = threading.Lock()
        self.crashes: Counter[str] = Counter()
        self.outage_until = 0.0
        self._output_bucket = ""
        self._undo: list[Callable[[], None]] = []

    def maybe_crash(self, point: str) -> None:
        with self._lock:
            hit = self._rng.random() < self._rate
            if hit:
                self.crashes[point] += 1
        if hit:
            raise SimulatedCrash(point)

    def _wrap(self, owner: Any, name: str, *, before: str | None = None, after: str | None = None) -> None:
        original = getattr(owner, name)
        faults = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                faults.maybe_crash(before)
            result = original(*args, **kwargs)
            if after and (result is not False and result is not None):
                faults.maybe_crash(after)
            return result

        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, original))

    def install(self, output_bucket: str) -> None:
        # Submit: after the row is written, after the claim, after VLM Run created the execution.
        self._wrap(JobStore, "create", after="ingest: row written, not claimed")
        self._wrap(SubmitClaims, "claim", after="submit: claimed, not sent")
        self._wrap(VlmRunClient, "execute", after="submit: sent, not recorded")
        # Delivery: after an artifact, after the version document, before the row says delivered.
        self._wrap(OutputWriter, "put_artifact_stream", after="deliver: artifact written")
        self._wrap(OutputWriter, "put_result", after="deliver: document written, not published")
        self._wrap(OutputWriter, "publish_latest", after="deliver: published, not marked delivered")
        self._output_bucket = output_bucket
        events = wiring.s3().meta.events
        event = "before-parameter-build.s3.PutObject"
        events.register(event, self._deny_output_write, unique_id="chaos-output-outage")
        self._undo.append(lambda: events.unregister(event, unique_id="chaos-output-outage"))

    def _deny_output_write(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == self._output_bucket and self._clock() < self.outage_until:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied (emulated)"}}, "PutObject")

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
