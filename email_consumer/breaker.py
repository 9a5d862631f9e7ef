"""The dead-letter breaker: when the mail server refuses everyone, stop dead-lettering.

A permanent refusal is a verdict on one recipient only if the server accepts others; a server
refusing every message (`530` at MAIL FROM, `550` to every RCPT TO) would otherwise empty the
queue into the DLQ. CLOSED: refusals of different recipients in a row are counted, a delivered
email resets the count; `threshold` of them, or one `ServerRefused`, open it. OPEN: refused
events are parked without using up a retry, and not tried but for one probe (a real event)
every `probe_interval_s`; the first email accepted closes it. Pure state behind a lock (the
pool threads share one breaker); transitions are returned for the caller to log and count.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class Transition:
    """The breaker changed state; `reason` says why (the refusal that opened it)."""

    state: BreakerState
    reason: str


class DeadLetterBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        probe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._refused_recipients: set[str] = set()
        self._next_probe_at = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    def allow_attempt(self) -> bool:
        """Whether to try this event now: always when closed; once per interval when open."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if now < self._next_probe_at:
                return False
            self._next_probe_at = now + self._probe_interval_s
            return True

    def record_delivered(self) -> Transition | None:
        """The server accepted an email: it works, whatever it refused before."""
        with self._lock:
            self._refused_recipients.clear()
            if self._state is BreakerState.CLOSED:
                return None
            self._state = BreakerState.CLOSED
            return Transition(BreakerState.CLOSED, "the mail server accepted an email")

    def record_server_refusal(self, reason: str) -> Transition | None:
        """The server refused the session or the sender: it refuses everyone alike."""
        with self._lock:
            return self._open(reason)

    def record_recipient_refusal(self, recipient: str, reason: str) -> Transition | None:
        """The server refused this recipient for good; counts once per distinct recipient."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                return None
            self._refused_recipients.add(recipient.lower())
            if len(self._refused_recipients) < self._threshold:
                return None
            count = len(self._refused_recipients)
            return self._open(f"{count} different recipients refused in a row; last: {reason}")

    def _open(self, reason: str) -> Transition | None:
        self._refused_recipients.clear()
        if self._state is BreakerState.OPEN:
            return None
        self._state = BreakerState.OPEN
        # The next probe after a full interval: the server was just seen refusing.
        self._next_probe_at = self._clock() + self._probe_interval_s
        return Transition(BreakerState.OPEN, reason)
