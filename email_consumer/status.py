"""What the worker is doing right now: for `/livez`, `/readyz` and three gauges.

The worker reports a few facts (its connection loop went round, it connected, it consumes, a
delivery was taken, a delivery was settled); this module turns them into verdicts:

* **live**: the connection loop went round within LIVENESS_TIMEOUT_S *and*, while deliveries
  are in flight, one of them was settled (or work arrived) within that time. A worker whose
  every pool thread is blocked (in SMTP, in the database) keeps its connection and heartbeats
  alive but delivers nothing: that is the stuck worker a restart cures.
* **ready**: connected to the broker and consuming the queue (not while reconnecting, nor
  while draining on SIGTERM).

In-flight counts belong to one connection: when it goes, its deliveries go back to the broker,
so the count starts again from zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.health import Heartbeat, Verdict

# Without settings (unit tests that build a Worker directly): the default claim lease.
DEFAULT_LIVENESS_TIMEOUT_S = 900.0


class WorkerStatus:
    def __init__(
        self,
        liveness_timeout_s: float = DEFAULT_LIVENESS_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout_s = liveness_timeout_s
        self._clock = clock
        self._loop = Heartbeat(liveness_timeout_s, clock)
        self._lock = threading.Lock()
        self._connected = False
        self._consuming = False
        self._in_flight = 0
        # While deliveries are in flight: when the last one settled, or when work arrived.
        self._progress_at = 0.0

    # ---- what the worker reports -------------------------------------------------------------

    def loop_ran(self) -> None:
        self._loop.beat()

    def connected(self) -> None:
        with self._lock:
            self._connected = True

    def consuming(self, consuming: bool) -> None:
        with self._lock:
            self._consuming = consuming

    def disconnected(self) -> None:
        with self._lock:
            self._connected = self._consuming = False
            self._in_flight = 0

    def delivery_taken(self) -> None:
        now = self._clock()
        with self._lock:
            if self._in_flight == 0:
                self._progress_at = now
            self._in_flight += 1

    def delivery_settled(self) -> None:
        now = self._clock()
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            self._progress_at = now

    # ---- what probes and gauges read ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def is_consuming(self) -> bool:
        with self._lock:
            return self._consuming

    def liveness(self) -> Verdict:
        loop = self._loop.verdict("the connection loop")
        if not loop.ok:
            return loop
        with self._lock:
            in_flight, stalled_s = self._in_flight, self._clock() - self._progress_at
        if in_flight and stalled_s > self._timeout_s:
            return Verdict(
                False,
                f"{in_flight} deliveries in flight and none settled for {stalled_s:.0f} s "
                f"(LIVENESS_TIMEOUT_S {self._timeout_s:g})",
            )
        return Verdict(True, f"{loop.detail}; {in_flight} deliveries in flight")

    def readiness(self) -> Verdict:
        with self._lock:
            connected, consuming = self._connected, self._consuming
        if not connected:
            return Verdict(False, "no broker connection")
        if not consuming:
            return Verdict(False, "connected, not consuming")
        return Verdict(True, "connected and consuming")
