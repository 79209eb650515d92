"""The harnesses' one clock: seconds since the epoch, real or virtual.

``Clock()`` follows the wall clock; ``Clock(start)`` is virtual and moves only when told
(:meth:`Clock.advance`). A harness hands the same clock to :class:`~vlmwatch_local.cloud.stack.LocalStack`,
which gives it to the emulator and to the runtime (``wiring``): "when was this created" and "is the
outage over" then agree everywhere, and perf can play hours of VLM Run time in seconds.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, start: float | None = None) -> None:
        self._virtual = start

    @property
    def virtual(self) -> bool:
        return self._virtual is not None

    def __call__(self) -> float:
        return time.time() if self._virtual is None else self._virtual

    def advance(self, seconds: float) -> None:
        """Move a virtual clock on (a real one cannot be moved)."""
        if self._virtual is None:
            raise RuntimeError("a real clock moves by itself: advance() is for a virtual one")
        self._virtual += seconds

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass: a real clock waits, a virtual one advances."""
        if self._virtual is None:
            time.sleep(seconds)
        else:
            self._virtual += seconds
