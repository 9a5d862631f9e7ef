"""Waiting for something the system does asynchronously, with a bound and a clear failure."""

from __future__ import annotations

from collections.abc import Callable

import tenacity


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float = 60.0, what: str = "condition"
) -> None:
    """Poll `condition` until true; fail naming `what` when `timeout_s` passes.

    The bound only keeps a broken run from hanging; it is not a speed requirement.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout_s),
        wait=tenacity.wait_fixed(0.2),
        retry=tenacity.retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
    )
    if not retrying(condition):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
