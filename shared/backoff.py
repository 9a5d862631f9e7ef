"""How every loop of both services waits after a failure: one doubling rule, one retry log line.

A reconnect loop, a relay pass that failed and the worker's in-process retries all back off the
same way (doubling, capped, with jitter where several processes would otherwise retry in
lock-step), so an operator reads one shape of "retrying" line whichever service wrote it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import tenacity

from shared.amqp import BrokerRefused

# A bound on the exponent: counters keep growing while a loop stays idle or failing (a pass
# every second for hours), and a float power of two overflows past 2**1023.
_MAX_DOUBLINGS = 64


def doubled(first_s: float, times: int, cap_s: float) -> float:
    """`first_s` doubled `times` times, at most `cap_s`."""
    return min(first_s * 2.0 ** min(max(times, 0), _MAX_DOUBLINGS), cap_s)


def jittered(delay_s: float, jitter_s: float) -> float:
    """`delay_s` plus up to `jitter_s` at random, so restarted processes spread out."""
    return delay_s + random.uniform(0.0, jitter_s)


class Doubling:
    """A failure counter with the wait it implies: `failed()` returns the next wait, `reset()`
    after a success. For hand-written loops that cannot be a tenacity call (a consumer loop
    that runs until stopped)."""

    def __init__(self, first_s: float, cap_s: float, jitter_s: float = 0.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter_s = jitter_s
        self.failures = 0

    def failed(self) -> float:
        wait_s = jittered(doubled(self.first_s, self.failures, self.cap_s), self.jitter_s)
        self.failures += 1
        return wait_s

    def reset(self) -> None:
        self.failures = 0


def tenacity_wait(first_s: float, cap_s: float, jitter_s: float = 0.0) -> tenacity.wait.wait_base:
    """The same doubling rule as a tenacity `wait=` argument."""
    wait: tenacity.wait.wait_base = tenacity.wait_exponential(multiplier=first_s, max=cap_s)
    if jitter_s > 0:
        wait = wait + tenacity.wait_random(0, jitter_s)
    return wait


def log_method_for(log: Any, error: BaseException | None) -> Callable[..., Any]:
    """`log.warning` for a failure worth retrying; `log.error` for a refused login or vhost, which
    will not cure itself, though still retried (an operator may be fixing the broker's users)."""
    method: Callable[..., Any] = log.error if isinstance(error, BrokerRefused) else log.warning
    return method


def log_retry(log: Any, event: str) -> Callable[[tenacity.RetryCallState], None]:
    """A tenacity `before_sleep` callback writing `event` to `log` with the attempt, the wait and
    the error, at the level `log_method_for` picks."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        write = log_method_for(log, error)
        write(
            event,
            attempt=state.attempt_number,
            retry_in_s=round(state.upcoming_sleep, 3),
            error_type=type(error).__name__,
            error=str(error),
        )

    return before_sleep
