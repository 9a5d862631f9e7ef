"""Liveness and readiness, as answers a probe can act on.

*Live* means the service's loop has made progress recently: a process whose loop is stuck (a
call that never returns, every thread blocked) is not live, whatever its connections say, and
restarting it is the cure. *Ready* means it is doing its job right now (connected, consuming):
a broker outage makes a service not ready, but not dead; restarting it would not help.

Pure state and a clock: the services tell it what happened, the HTTP endpoint asks it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Verdict:
    """One probe's answer: `ok`, and one line saying why (shown by the `health` command)."""

    ok: bool
    detail: str


class HealthChecks(Protocol):
    def liveness(self) -> Verdict: ...

    def readiness(self) -> Verdict: ...


class Heartbeat:
    """Progress of one loop: `beat()` where it goes round; not live after `timeout_s` without."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        # Start-up counts as progress: the loop has `timeout_s` to go round a first time.
        self._last = clock()

    def beat(self) -> None:
        now = self._clock()
        with self._lock:
            self._last = now

    def silent_for(self) -> float:
        """Seconds since the last beat."""
        with self._lock:
            last = self._last
        return self._clock() - last

    def verdict(self, what: str) -> Verdict:
        silent = self.silent_for()
        if silent > self._timeout_s:
            return Verdict(
                False,
                f"{what} made no progress for {silent:.0f} s (LIVENESS_TIMEOUT_S "
                f"{self._timeout_s:g})",
            )
        return Verdict(True, f"{what} went round {silent:.1f} s ago")
