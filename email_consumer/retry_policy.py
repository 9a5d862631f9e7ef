"""What the worker does after a failure, as data with documented defaults.

Three stages: retried in process (tenacity, backoff with jitter, within `attempts` and
`max_total_s`, far below RabbitMQ's 30-minute consumer timeout) to ride out a blip without the
broker; then parked in the TTL queue for the next delay of `broker_delays_s`, so a long outage
holds no thread and no unacknowledged delivery; then the DLQ (at once for a permanent error).
An event busy elsewhere, and every event while the breaker is open, wait without using up a
retry (`park`). An email that may have been sent (no reply to the final dot) is never retried
in process: it is parked once for its one resend (`after_uncertain`), and after an uncertain
resend it goes to the DLQ (`uncertain`) and is never sent again, not even by a replay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from shared.backoff import tenacity_wait
from shared.errors import TransientError
from shared.topology import DEFAULT_RETRY_DELAYS_S

DEFAULT_ATTEMPTS = 4
DEFAULT_INITIAL_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 5.0
# With the defaults above the waits add up to about 4 s, plus up to 3 SMTP timeouts; 30 s caps
# one delivery's in-process time far below the broker's 30-minute consumer timeout.
DEFAULT_MAX_TOTAL_S = 30.0

RetryLogger = Callable[[tenacity.RetryCallState], None]


@dataclass(frozen=True)
class RetryLater:
    """Park the event in the retry queue of `delay_s` seconds."""

    delay_s: int
    # False when the wait is not a retry of a failure (the event was busy elsewhere), so it
    # does not use up one of the event's delayed retries.
    counts_as_retry: bool = True


# The `dead-letter-reason` header values (failure_headers.py); `malformed` is decided before
# the policy is asked.
PERMANENT = "permanent"
RETRIES_EXHAUSTED = "retries-exhausted"
MALFORMED = "malformed"
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class DeadLetter:
    """Move the event to the dead-letter queue, saying why (`PERMANENT`, `RETRIES_EXHAUSTED`)."""

    reason: str


Decision = RetryLater | DeadLetter


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = DEFAULT_ATTEMPTS
    initial_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    max_total_s: float = DEFAULT_MAX_TOTAL_S
    broker_delays_s: tuple[int, ...] = DEFAULT_RETRY_DELAYS_S

    def in_process(
        self,
        *,
        before_sleep: RetryLogger | None = None,
        stopping: threading.Event | None = None,
        max_total_s: float | None = None,
    ) -> tenacity.Retrying:
        """A tenacity controller retrying `TransientError` only, re-raising the last error.

        When `stopping` is set (the worker shuts down), no further attempt starts and a running
        backoff ends early, so shut-down is not held up by a retry schedule. `max_total_s`
        narrows the policy's time budget (never widens it).
        """
        budget_s = self.max_total_s if max_total_s is None else min(max_total_s, self.max_total_s)
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(
            self.attempts
        ) | tenacity.stop_after_delay(budget_s)
        sleep: Callable[[float], None] = tenacity.nap.sleep
        if stopping is not None:
            stop = stop | tenacity.stop_when_event_set(stopping)
            sleep = _interruptible_sleep(stopping)
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=stop,
            # Up to one initial backoff of jitter: workers hit by one outage spread out.
            wait=tenacity_wait(
                self.initial_backoff_s, self.max_backoff_s, jitter_s=self.initial_backoff_s
            ),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def after_failure(
        self, *, permanent: bool, broker_retries_done: int, busy: bool = False
    ) -> Decision:
        """Where an event goes once its delivery failed (in-process retries already spent).

        `busy`: another delivery of the same event held it all along. That one will send the
        email or its claim will expire, so the event waits (the first delay) without using up a
        retry; dead-lettering it would be wrong.
        """
        if permanent:
            return DeadLetter(PERMANENT)
        if busy and self.broker_delays_s:
            return self.park(at_least_s=self.broker_delays_s[0])
        if broker_retries_done < len(self.broker_delays_s):
            return RetryLater(self.broker_delays_s[broker_retries_done])
        return DeadLetter(RETRIES_EXHAUSTED)

    def park(self, *, at_least_s: float = 0.0, otherwise: str = RETRIES_EXHAUSTED) -> Decision:
        """Wait without using up a retry: the shortest retry queue of at least `at_least_s`
        (the longest if none is that long); `DeadLetter(otherwise)` when there are no queues."""
        if not self.broker_delays_s:
            return DeadLetter(otherwise)
        long_enough = [delay for delay in self.broker_delays_s if delay >= at_least_s]
        delay = min(long_enough) if long_enough else max(self.broker_delays_s)
        return RetryLater(delay, counts_as_retry=False)

    def after_uncertain(self, *, final: bool, resend_after_s: float) -> Decision:
        """Where an event goes when its email may have been sent (see the module's docstring)."""
        if final:
            return DeadLetter(UNCERTAIN)
        return self.park(at_least_s=resend_after_s, otherwise=UNCERTAIN)


def _interruptible_sleep(stopping: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    return sleep
